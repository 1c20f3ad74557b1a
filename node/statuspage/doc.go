// Package statuspage is the read-only status page a node serves over HTTP: one
// server-rendered HTML page (html/template) with its charts drawn as SVG on the server,
// so no JavaScript and no build chain are involved.
//
// The package is the page's deterministic core: View is everything the page shows,
// History is a bounded ring of capacity and throughput samples (times come from the
// caller's clock), the chart functions turn numbers into SVG, and Render turns a View
// into HTML. Gathering a View from the cluster, and who may see it (admin certificates
// or a loopback listener), are the node's business (node/status.go); Handler serves
// whatever its gather function returns.
package statuspage
