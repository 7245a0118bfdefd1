package memory_test

import (
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/store"
	"github.com/ralf-gateway/ralf/plugins/store/memory"
	"github.com/ralf-gateway/ralf/plugins/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := memory.New()
		t.Cleanup(func() { _ = s.Close() })
		return s
	}, storetest.Ephemeral())
}

func TestOpenByURL(t *testing.T) {
	s, err := store.Open("memory://", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*memory.Store); !ok {
		t.Fatalf("memory:// opened %T", s)
	}
	if s.Invalidations() != nil {
		t.Error("memory store has invalidations; nothing else can change it")
	}
}
