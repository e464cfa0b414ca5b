package lsn

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    LSN
		wantErr bool
	}{
		{in: "0/0", want: 0},
		{in: "0/16B3748", want: 0x16B3748},
		{in: "16/B374D848", want: 0x16_B374D848},
		{in: "ffffffff/ffffffff", want: 0xFFFFFFFF_FFFFFFFF},
		{in: "FFFFFFFF/0", want: 0xFFFFFFFF_00000000},
		{in: "00000001/00000002", want: 0x1_00000002},
		{in: "", wantErr: true},
		{in: "/", wantErr: true},
		{in: "0/", wantErr: true},
		{in: "/0", wantErr: true},
		{in: "0", wantErr: true},
		{in: "1/2/3", wantErr: true},
		{in: "g/0", wantErr: true},
		{in: "0/x", wantErr: true},
		{in: " 0/0", wantErr: true},
		{in: "0/0 ", wantErr: true},
		{in: "-1/0", wantErr: true},
		{in: "+1/0", wantErr: true},
		{in: "0x1/0", wantErr: true},
		{in: "123456789/0", wantErr: true},
		{in: "0/123456789", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("Parse(%q) = %v, %v; want ErrSyntax", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		in   LSN
		want string
	}{
		{0, "0/0"},
		{0x16B3748, "0/16B3748"},
		{0x16_B374D848, "16/B374D848"},
		{0xFFFFFFFF_FFFFFFFF, "FFFFFFFF/FFFFFFFF"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("%d.String() = %q, want %q", uint64(tt.in), got, tt.want)
		}
		if back, err := Parse(tt.want); err != nil || back != tt.in {
			t.Errorf("Parse(%q) = %v, %v", tt.want, back, err)
		}
	}
}

func TestNormalize(t *testing.T) {
	const seg = DefaultSegmentSize
	page := LSN(5*seg + 3*PageSize) // an ordinary page, not a segment start
	segStart := LSN(5 * seg)        // first page of a segment: long header
	tests := []struct {
		name string
		in   LSN
		seg  uint64
		want LSN
	}{
		{"page start stays", page, 0, page},
		{"past short header rounds down", page + 24, 0, page},
		{"inside short header rounds down", page + 8, 0, page},
		{"first record byte after header stays", page + 25, 0, page + 25},
		{"record end after header stays", page + 40, 0, page + 40},
		{"middle of page stays", page + 4000, 0, page + 4000},
		{"segment start stays", segStart, 0, segStart},
		{"past long header rounds down", segStart + 40, 0, segStart},
		{"inside long header rounds down", segStart + 24, 0, segStart},
		{"after long header stays", segStart + 48, 0, segStart + 48},
		// With 1 MiB segments, 5*seg+1MiB is a segment start; with 16 MiB it is not.
		{"small segments: long header", LSN(5*seg+1<<20) + 40, 1 << 20, LSN(5*seg + 1<<20)},
		{"default segments: no long header there", LSN(5*seg+1<<20) + 40, 0, LSN(5*seg+1<<20) + 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.Normalize(tt.seg); got != tt.want {
				t.Fatalf("%s.Normalize(%d) = %s, want %s", tt.in, tt.seg, got, tt.want)
			}
		})
	}
}

func TestTextAndSQL(t *testing.T) {
	l := MustParse("1/A0")
	b, err := json.Marshal(struct{ At LSN }{l})
	if err != nil || string(b) != `{"At":"1/A0"}` {
		t.Fatalf("json = %s, %v", b, err)
	}
	var back struct{ At LSN }
	if err := json.Unmarshal(b, &back); err != nil || back.At != l {
		t.Fatalf("unmarshal = %v, %v", back.At, err)
	}
	if err := json.Unmarshal([]byte(`{"At":"nope"}`), &back); !errors.Is(err, ErrSyntax) {
		t.Fatalf("unmarshal bad text: %v", err)
	}
	v, _ := l.Value()
	if v != "1/A0" {
		t.Fatalf("Value = %v", v)
	}
	var s LSN
	for _, src := range []any{"1/A0", []byte("1/A0")} {
		if err := s.Scan(src); err != nil || s != l {
			t.Fatalf("Scan(%v) = %v, %v", src, s, err)
		}
	}
	for _, src := range []any{nil, 12, "x"} {
		if err := s.Scan(src); err == nil {
			t.Fatalf("Scan(%v) succeeded", src)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "", "/", "1/2/3", "123456789/0", "a/b c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse(%q): error %v does not wrap ErrSyntax", s, err)
			}
			return
		}
		// Whatever parses must print and parse back to the same value.
		back, err := Parse(l.String())
		if err != nil || back != l {
			t.Fatalf("Parse(%q) = %s, which round-trips to %v, %v", s, l, back, err)
		}
		if n := l.Normalize(0); n > l || l-n > 40 {
			t.Fatalf("Normalize(%s) = %s moved too far", l, n)
		}
	})
}
