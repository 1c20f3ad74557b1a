package transport

import (
	"context"
	"strconv"
	"strings"
	"sync"
)

// Mux routes RPCs to handlers by method prefix: a method "shard.Put" goes to the handler
// registered for "shard" (the part before the first '.'). The handler receives the full
// method name. Mux is safe for concurrent use; handlers may be registered while it serves.
type Mux struct {
	mu struct {
		sync.RWMutex
		handlers map[string]Handler
	}
}

// NewMux returns an empty Mux. Every method is answered UnknownMethod until a handler is
// registered for its prefix.
func NewMux() *Mux {
	m := &Mux{}
	m.mu.handlers = make(map[string]Handler)
	return m
}

// Handle registers h for methods "prefix.*". Registering a prefix again replaces the
// previous handler. It panics on an empty prefix, a prefix containing '.', or a nil
// handler: those are programming errors in the composition root.
func (m *Mux) Handle(prefix string, h Handler) {
	if prefix == "" || strings.Contains(prefix, ".") {
		panic("transport: Mux.Handle: invalid prefix " + strconv.Quote(prefix))
	}
	if h == nil {
		panic("transport: Mux.Handle: nil handler for prefix " + strconv.Quote(prefix))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.handlers[prefix] = h
}

// ServeRPC implements Handler: it dispatches to the handler registered for the method's
// prefix, or returns an UnknownMethod error naming the method.
func (m *Mux) ServeRPC(ctx context.Context, peer Peer, method string, body []byte) ([]byte, error) {
	prefix, _, ok := strings.Cut(method, ".")
	if !ok || prefix == "" {
		return nil, Errorf(UnknownMethod, "transport: unknown method %q (want prefix.Name)", method)
	}
	m.mu.RLock()
	h := m.mu.handlers[prefix]
	m.mu.RUnlock()
	if h == nil {
		return nil, Errorf(UnknownMethod, "transport: unknown method %q", method)
	}
	return h.ServeRPC(ctx, peer, method, body)
}
