package fly

import (
	"context"
	"testing"
)

func TestRegion(t *testing.T) {
	tests := []struct {
		name                    string
		fly, my, primary        string
		wantRegion, wantPrimary string
		wantIsPrimary           bool
	}{
		{name: "nothing set", wantRegion: "local", wantPrimary: "local", wantIsPrimary: true},
		{name: "fly region wins", fly: "syd", my: "ams", primary: "syd", wantRegion: "syd", wantPrimary: "syd", wantIsPrimary: true},
		{name: "my region fallback", my: "ams", primary: "syd", wantRegion: "ams", wantPrimary: "syd"},
		{name: "primary elsewhere", fly: "ord", primary: "syd", wantRegion: "ord", wantPrimary: "syd"},
		{name: "only primary set", primary: "syd", wantRegion: "local", wantPrimary: "syd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("FLY_REGION", tt.fly)
			t.Setenv("MY_REGION", tt.my)
			t.Setenv("PRIMARY_REGION", tt.primary)
			if got := Region(); got != tt.wantRegion {
				t.Errorf("Region() = %q, want %q", got, tt.wantRegion)
			}
			if got := PrimaryRegion(); got != tt.wantPrimary {
				t.Errorf("PrimaryRegion() = %q, want %q", got, tt.wantPrimary)
			}
			if got := IsPrimary(); got != tt.wantIsPrimary {
				t.Errorf("IsPrimary() = %v, want %v", got, tt.wantIsPrimary)
			}
		})
	}
}

func TestMarkers(t *testing.T) {
	ctx := context.Background()
	if IsNoAwait(ctx) || IsLocal(ctx) {
		t.Fatal("plain context carries a marker")
	}
	na := NoAwait(ctx)
	if !IsNoAwait(na) || IsLocal(na) {
		t.Fatal("NoAwait marks the wrong thing")
	}
	both := Local(na)
	if !IsNoAwait(both) || !IsLocal(both) {
		t.Fatal("markers do not stack")
	}
}
