package main

import (
	"context"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/site"
)

// openReader opens the reader the read verbs use: the store, or the
// running metal serve that holds it; url is the store's.
func openReader(ctx context.Context, a *app, f *arguments.State) (r inventory.Reader, url string, err error) {
	st, err := f.Resolve(a.stderr, false)
	if err != nil {
		return nil, "", err
	}
	r, err = apiclient.Reader(ctx, st.State, a.logger())
	return r, st.State, err
}

// stateDir is the state directory of s as metal serve uses it: flag, or
// beside the site's file:// store (where the fence mark is).
func stateDir(s *site.Site, siteDir, flag string) string {
	if flag != "" {
		return flag
	}
	return site.DefaultStateDir(s.Settings.State, siteDir)
}

// refuseFenced stops a verb that serves or changes machines on an instance
// marked fenced (backup.CheckMark says why and how to clear it).
func refuseFenced(s *site.Site, siteDir, stateDirFlag string) error {
	if err := backup.CheckMark(stateDir(s, siteDir, stateDirFlag), s.Name); err != nil {
		return failed(err)
	}
	return nil
}
