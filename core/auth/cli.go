package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ralf-gateway/ralf/core/store"
)

// ErrUsage marks a command line the keys command does not understand.
var ErrUsage = errors.New("usage: ralf keys create NAME | ralf keys list | ralf keys revoke ID|KEY")

// KeysCommand runs `ralf keys create NAME`, `ralf keys list` and
// `ralf keys revoke ID|KEY` against keys, writing results to out. A bad command
// line returns an error wrapping ErrUsage.
func KeysCommand(ctx context.Context, args []string, keys *Keys, out io.Writer) error {
	if len(args) == 0 {
		return ErrUsage
	}
	switch args[0] {
	case "create":
		name := strings.TrimSpace(strings.Join(args[1:], " "))
		switch {
		case name == "":
			return fmt.Errorf("keys create needs a name: %w", ErrUsage)
		case utf8.RuneCountInString(name) > maxNameLen:
			return fmt.Errorf("key name must be at most %d characters: %w", maxNameLen, ErrUsage)
		case strings.IndexFunc(name, unicode.IsControl) >= 0:
			return fmt.Errorf("key name must not contain control characters: %w", ErrUsage)
		}
		secret, k, err := keys.Create(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "Created key %q (id %s).\n", k.Name, k.ID)
		fmt.Fprintf(out, "API key (shown once, store it now): %s\n", secret)
		return nil
	case "list", "ls":
		if len(args) != 1 {
			return fmt.Errorf("keys list takes no argument: %w", ErrUsage)
		}
		list, err := keys.List(ctx)
		if err != nil {
			return err
		}
		return printKeys(out, list)
	case "revoke", "rm", "delete":
		if len(args) != 2 || strings.TrimSpace(args[1]) == "" {
			return fmt.Errorf("keys revoke needs one key id or key: %w", ErrUsage)
		}
		err := keys.Revoke(ctx, args[1])
		if errors.Is(err, store.ErrNotFound) {
			return errors.New("no such key") // the argument may be a secret: not echoed
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(out, "Revoked.")
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(out, ErrUsage.Error())
		return nil
	}
	return fmt.Errorf("unknown keys command: %w", ErrUsage)
}

func printKeys(out io.Writer, list []store.Key) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(out, "No keys. Create one with: ralf keys create NAME")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKEY\tNAME\tCREATED\tLAST USED\tREQUESTS\tENABLED")
	for _, k := range list {
		last := "never"
		if k.LastUsed != nil {
			last = k.LastUsed.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%t\n", k.ID, k.Prefix, k.Name,
			k.CreatedAt.UTC().Format(time.RFC3339), last, strconv.FormatInt(k.RequestCount, 10), k.Enabled)
	}
	return tw.Flush()
}
