package gateway

// BodyReadTimeout lets tests shorten the bound on a request body's read.
var BodyReadTimeout = &bodyReadTimeout

// ClientWriteTimeout lets tests shorten the bound on a client that stops reading.
var ClientWriteTimeout = &clientWriteTimeout
