package gateway

// BodyReadTimeout lets tests shorten the bound on a request body's read.
var BodyReadTimeout = &bodyReadTimeout
