package inventory

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"time"
)

// pfxServer holds the metal serves of the site: servers/<hash of URL> →
// Server. Keyed by URL, a serve started again where one ran before takes
// its record over.
const pfxServer = "servers/"

// Server is one metal serve of the site as the others see it: where
// machines reach it, and when it last said it was up (a serve that died
// leaves its record, growing old).
type Server struct {
	Owner    string    `json:"owner"`
	URL      string    `json:"url"`
	Seen     time.Time `json:"seen"`
	Revision int64     `json:"-"`
}

func serverKey(url string) string {
	sum := sha256.Sum256([]byte(url))
	return pfxServer + hex.EncodeToString(sum[:8])
}

// Servers returns the site's metal serves, the most recently seen first.
func (s *store) Servers(ctx context.Context) ([]Server, error) {
	kvs, _, err := s.kv.List(ctx, KeyRange{Prefix: pfxServer})
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	out := make([]Server, 0, len(kvs))
	for _, kv := range kvs {
		srv, err := decode[Server](kv)
		if err != nil {
			return nil, err
		}
		srv.Revision = kv.ModRev
		out = append(out, srv)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seen.After(out[j].Seen) })
	return out, nil
}

// PutServer records srv under its URL, over whatever was recorded there
// (the record says only who is there now).
func (s *store) PutServer(ctx context.Context, srv Server) (Server, error) {
	if srv.URL == "" {
		return Server{}, fmt.Errorf("server %q: needs a URL: %w", srv.Owner, ErrInvalid)
	}
	key := serverKey(srv.URL)
	cur, found, err := s.kv.Get(ctx, key)
	if err != nil {
		return Server{}, fmt.Errorf("put server %s: %w", srv.URL, err)
	}
	rev := int64(0)
	if found {
		rev = cur.ModRev
	}
	if rev, err = s.cas(ctx, "server", srv.URL, key, rev, mustJSON(srv)); err != nil {
		return Server{}, err
	}
	srv.Revision = rev
	return srv, nil
}
