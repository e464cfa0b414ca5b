// Package forwardpb holds the generated protocol buffer and gRPC code of the
// flypg forwarding protocol (forward.proto, package flypg.forward.v1).
//
// Regenerate after editing forward.proto with:
//
//	go generate ./forward/forwardpb
//
// which needs protoc on PATH (Debian: apt-get install protobuf-compiler) and
// installs the pinned Go plugins into a temporary directory.
package forwardpb

//go:generate sh ./generate.sh
