package statuspage

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// gatherTimeout bounds one page's gathering (the node asks every node for its status).
const gatherTimeout = 10 * time.Second

// Handler serves the page. Every request passes Authorize first; the page itself is
// gathered per request. Only GET and HEAD of "/" are served.
type Handler struct {
	Page *Page
	// Gather collects the view; it must honour ctx (the request's, bounded to 10 s).
	Gather func(ctx context.Context) View
	// Authorize decides whether the request may see the page: nil lets it through, an
	// error is answered 403 Forbidden with the error's text.
	Authorize func(r *http.Request) error
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	// The page runs no script and loads nothing: inline styles and inline SVG only.
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; form-action 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	if err := h.Authorize(r); err != nil {
		http.Error(w, fmt.Sprintf("statuspage: forbidden: %v", err), http.StatusForbidden)
		return
	}
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "statuspage: the status page is read-only (GET or HEAD)", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), gatherTimeout)
	defer cancel()
	v := h.Gather(ctx)
	hd.Set("Content-Type", "text/html; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	if err := h.Page.Render(w, v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
