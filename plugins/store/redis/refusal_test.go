package redis

import (
	"net"
	"strings"
	"testing"
	"time"
)

// fakeRedis answers every command with the error line reply, as a Redis that is
// loading its data (LOADING) or refuses the password (WRONGPASS) does.
func fakeRedis(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					// One error reply per command in what was read (each starts with '*').
					for i := 0; i < strings.Count(string(buf[:n]), "*"); i++ {
						if _, err := c.Write([]byte("-" + reply + "\r\n")); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestOpenRefusalOrNotReady: a Redis that refuses (a wrong password) stops the start;
// one that is not ready yet (LOADING after a restart) does not: it will be.
func TestOpenRefusalOrNotReady(t *testing.T) {
	for _, c := range []struct {
		reply   string
		wantErr bool
	}{
		{"LOADING Redis is loading the dataset in memory", false},
		{"BUSY Redis is busy running a script", false},
		{"WRONGPASS invalid username-password pair or user is disabled.", true},
	} {
		t.Run(strings.Fields(c.reply)[0], func(t *testing.T) {
			addr := fakeRedis(t, c.reply)
			start := time.Now()
			s, err := Open("redis://"+addr+"/0", nil)
			if err == nil {
				s.Close()
			}
			if (err != nil) != c.wantErr {
				t.Fatalf("Open: %v, want an error: %v", err, c.wantErr)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("Open took %v", d)
			}
		})
	}
}
