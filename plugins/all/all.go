// Package all wires every plugin in with blank imports: the one place a new
// dialect or store backend is added.
package all

import (
	_ "github.com/ralf-gateway/ralf/plugins/gemini"       // dialect "gemini"
	_ "github.com/ralf-gateway/ralf/plugins/openai"       // dialect "openai"
	_ "github.com/ralf-gateway/ralf/plugins/store/memory" // store memory://
	_ "github.com/ralf-gateway/ralf/plugins/store/redis"  // store redis://
	_ "github.com/ralf-gateway/ralf/plugins/store/sqlite" // store sqlite://
)
