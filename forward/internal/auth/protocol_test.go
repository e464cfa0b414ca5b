package auth

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestCheckProtocol(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		wantErr string // "" = accepted
	}{
		{"match", incoming(ProtocolHeader, "1"), ""},
		{"mismatch", incoming(ProtocolHeader, "2"), `client speaks protocol "2", server speaks protocol "1"`},
		{"missing", incoming(), `client sent no flypg-protocol header; server speaks protocol "1"`},
		{"no metadata", context.Background(), `client sent no flypg-protocol header`},
		{"twice", incoming(ProtocolHeader, "1", ProtocolHeader, "1"), "client sent 2 flypg-protocol headers"},
		{"long value truncated", incoming(ProtocolHeader, strings.Repeat("9", 1000)), `"9999999999999999"…, server speaks protocol "1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckProtocol(tc.ctx, "1")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			st := status.Convert(err)
			if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), tc.wantErr) {
				t.Fatalf("got %v, want FailedPrecondition containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestWithProtocol checks that the client helper produces what the server
// helper expects.
func TestWithProtocol(t *testing.T) {
	out := WithProtocol(context.Background(), "1")
	md, _ := metadata.FromOutgoingContext(out)
	if err := CheckProtocol(metadata.NewIncomingContext(context.Background(), md), "1"); err != nil {
		t.Fatal(err)
	}
}
