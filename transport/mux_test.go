package transport_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/transport"
)

func echoPrefix(tag string) transport.Handler {
	return transport.HandlerFunc(func(_ context.Context, p transport.Peer, method string, body []byte) ([]byte, error) {
		return []byte(tag + ":" + method + ":" + p.Principal + ":" + string(body)), nil
	})
}

func TestMuxRoutesByPrefix(t *testing.T) {
	m := transport.NewMux()
	m.Handle("shard", echoPrefix("S"))
	m.Handle("chunk", echoPrefix("C"))
	peer := transport.Peer{Principal: "n1", Role: transport.RoleNode}
	for _, tc := range []struct{ method, want string }{
		{"shard.Put", "S:shard.Put:n1:x"},
		{"chunk.Get", "C:chunk.Get:n1:x"},
		{"chunk.Get.Deep", "C:chunk.Get.Deep:n1:x"},
	} {
		got, err := m.ServeRPC(context.Background(), peer, tc.method, []byte("x"))
		if err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		if string(got) != tc.want {
			t.Errorf("%s: got %q, want %q", tc.method, got, tc.want)
		}
	}
}

func TestMuxUnknownMethod(t *testing.T) {
	m := transport.NewMux()
	m.Handle("shard", echoPrefix("S"))
	for _, method := range []string{"meta.Apply", "shard", "", ".Put", "shardPut"} {
		_, err := m.ServeRPC(context.Background(), transport.Peer{}, method, nil)
		if transport.CodeOf(err) != transport.UnknownMethod {
			t.Errorf("%q: code %v (%v), want UnknownMethod", method, transport.CodeOf(err), err)
		}
		if err != nil && !strings.Contains(err.Error(), `"`+method+`"`) {
			t.Errorf("%q: error %q does not name the method", method, err)
		}
	}
}

func TestMuxReplaceAndErrors(t *testing.T) {
	m := transport.NewMux()
	m.Handle("x", echoPrefix("old"))
	boom := transport.Errorf(transport.NotFound, "nope")
	m.Handle("x", transport.HandlerFunc(func(context.Context, transport.Peer, string, []byte) ([]byte, error) {
		return nil, boom
	}))
	_, err := m.ServeRPC(context.Background(), transport.Peer{}, "x.Y", nil)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the replacement handler's error", err)
	}
}

func TestMuxHandlePanicsOnBadPrefix(t *testing.T) {
	for _, p := range []string{"", "a.b"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Handle(%q) did not panic", p)
				}
			}()
			transport.NewMux().Handle(p, echoPrefix("x"))
		}()
	}
}
