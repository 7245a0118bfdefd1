package gateway

import "net/http"

// BodyReadTimeout lets tests shorten the bound on a request body's read.
var BodyReadTimeout = &bodyReadTimeout

// ClientWriteTimeout lets tests shorten the bound on a client that stops reading.
var ClientWriteTimeout = &clientWriteTimeout

// Handler is the handler of the generation being served now: a test may keep it
// and call it after a reload, as a request that arrived before the reload would.
func (g *Gateway) Handler() http.Handler { return g.cur.Load().handler }
