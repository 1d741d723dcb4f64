// Package etcd is the inventory backend for several metal servers sharing one
// etcd cluster: the store's revisions and compare-and-swap are etcd's own,
// watches are etcd watches, and leader election uses etcd sessions.
package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/metal-dev/metal/inventory"
)

// TLSOptions are the client TLS settings for an etcd cluster.
type TLSOptions struct {
	CAFile   string // PEM bundle that signs the servers' certificates
	CertFile string // client certificate (PEM), for client-cert auth
	KeyFile  string
	// ServerName overrides the name checked in the servers' certificates.
	ServerName string
}

// Config says how to reach the cluster and where metal's keys live.
type Config struct {
	Endpoints []string // host:port or http(s)://host:port
	// Prefix is the key prefix of this site's store ("/metal/"); several
	// sites may share a cluster under different prefixes.
	Prefix   string
	TLS      *TLSOptions
	Username string
	Password string
	// DialTimeout bounds connecting and the first read (default 5s).
	DialTimeout time.Duration
	// SessionTTL is how long a dead leader keeps leadership, in seconds
	// (default 10).
	SessionTTL int
	Logger     *slog.Logger
	// Dial connects to an endpoint's host:port (default TCP from this
	// host): for a cluster reached through a network namespace or a
	// tunnel.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// maxTxnOps stays under etcd's default --max-txn-ops (128).
const maxTxnOps = 100

// KV is an inventory.KV over an etcd cluster.
type KV struct {
	cli     *clientv3.Client
	data    string // prefix of inventory keys
	elect   string // prefix of election keys
	ttl     int
	log     *slog.Logger
	mu      sync.Mutex
	elected []*election
}

// Open connects to the cluster and checks it answers.
func Open(ctx context.Context, cfg Config) (*KV, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("etcd: no endpoints")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 10
	}
	prefix := "/" + strings.Trim(cfg.Prefix, "/") + "/"
	if prefix == "//" {
		prefix = "/metal/"
	}
	eps := make([]string, len(cfg.Endpoints))
	for i, ep := range cfg.Endpoints {
		if !strings.Contains(ep, "://") {
			scheme := "http://"
			if cfg.TLS != nil {
				scheme = "https://"
			}
			ep = scheme + ep
		}
		eps[i] = ep
	}
	cc := clientv3.Config{
		Endpoints:   eps,
		DialTimeout: cfg.DialTimeout,
		Username:    cfg.Username,
		Password:    cfg.Password,
		// The client logs through zap; metal's log stays slog, so the
		// client's chatter (reconnects) is dropped and errors surface as
		// returned errors instead.
		Logger: zap.NewNop(),
	}
	if cfg.Dial != nil {
		cc.DialOptions = append(cc.DialOptions, grpc.WithContextDialer(cfg.Dial))
	}
	if cfg.TLS != nil {
		tc, err := tlsConfig(*cfg.TLS)
		if err != nil {
			return nil, err
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, prefix, clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd %s unreachable: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return &KV{cli: cli, data: prefix + "kv/", elect: prefix + "election/", ttl: cfg.SessionTTL, log: cfg.Logger}, nil
}

func tlsConfig(o TLSOptions) (*tls.Config, error) {
	tc := &tls.Config{ServerName: o.ServerName, MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd tls ca %s: no PEM certificates", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if o.CertFile != "" || o.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Client is the underlying etcd client (for the tests and for tools).
func (s *KV) Client() *clientv3.Client { return s.cli }

func (s *KV) Get(ctx context.Context, key string) (inventory.KeyValue, bool, error) {
	resp, err := s.cli.Get(ctx, s.data+key)
	if err != nil {
		return inventory.KeyValue{}, false, fmt.Errorf("etcd get: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return inventory.KeyValue{}, false, nil
	}
	kv := resp.Kvs[0]
	return inventory.KeyValue{Key: key, Value: kv.Value, ModRev: kv.ModRevision}, true, nil
}

// rangeOf maps a KeyRange onto etcd's [key, end).
func (s *KV) rangeOf(r inventory.KeyRange) (string, string) {
	from, to := r.Bounds()
	end := clientv3.GetPrefixRangeEnd(s.data)
	if to != "" {
		end = s.data + to
	}
	return s.data + from, end
}

func (s *KV) List(ctx context.Context, r inventory.KeyRange) ([]inventory.KeyValue, int64, error) {
	from, end := s.rangeOf(r)
	opts := []clientv3.OpOption{clientv3.WithRange(end)}
	if r.Limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(r.Limit)))
	}
	resp, err := s.cli.Get(ctx, from, opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("etcd list: %w", err)
	}
	out := make([]inventory.KeyValue, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = inventory.KeyValue{Key: string(kv.Key[len(s.data):]), Value: kv.Value, ModRev: kv.ModRevision}
	}
	return out, resp.Header.Revision, nil
}

func (s *KV) Txn(ctx context.Context, t inventory.Txn) (int64, bool, error) {
	cmps := make([]clientv3.Cmp, len(t.If))
	for i, c := range t.If {
		cmps[i] = clientv3.Compare(clientv3.ModRevision(s.data+c.Key), "=", c.ModRev)
	}
	ops := make([]clientv3.Op, len(t.Then))
	for i, op := range t.Then {
		switch {
		case op.Delete && op.End != "":
			ops[i] = clientv3.OpDelete(s.data+op.Key, clientv3.WithRange(s.data+op.End))
		case op.Delete:
			ops[i] = clientv3.OpDelete(s.data + op.Key)
		default:
			ops[i] = clientv3.OpPut(s.data+op.Key, string(op.Value))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("etcd txn: %w", err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

func (s *KV) Watch(ctx context.Context, prefix string, fromRev int64) (<-chan inventory.KVEvent, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if fromRev > 0 {
		opts = append(opts, clientv3.WithRev(fromRev+1))
	}
	// The watch ends with ctx; the client closes its channel then.
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.data+prefix, opts...)
	out := make(chan inventory.KVEvent, 64)
	go func() {
		defer close(out)
		send := func(e inventory.KVEvent) bool {
			select {
			case out <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for resp := range wch {
			if err := resp.Err(); err != nil {
				if resp.CompactRevision != 0 || errors.Is(err, rpctypes.ErrCompacted) {
					err = fmt.Errorf("etcd compacted revision %d: %w", resp.CompactRevision, inventory.ErrWatchLagged)
				}
				send(inventory.KVEvent{Err: fmt.Errorf("etcd watch: %w", err)})
				return
			}
			for _, ev := range resp.Events {
				e := inventory.KVEvent{Key: string(ev.Kv.Key[len(s.data):]), ModRev: ev.Kv.ModRevision, Value: ev.Kv.Value}
				if ev.Type == clientv3.EventTypeDelete {
					e.Delete, e.Value = true, nil
				}
				if !send(e) {
					return
				}
			}
		}
		if ctx.Err() == nil {
			// Closed without our asking: leader lost or client closed.
			send(inventory.KVEvent{Err: fmt.Errorf("etcd watch closed: %w", inventory.ErrWatchLagged)})
		}
	}()
	return out, nil
}

// Dump pages through the keys at one revision, so the view is consistent
// however long it takes (as long as etcd has not compacted that revision).
func (s *KV) Dump(ctx context.Context, fn func(inventory.KeyValue) error) (int64, error) {
	from, end := s.rangeOf(inventory.KeyRange{})
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return 0, fmt.Errorf("etcd dump: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(inventory.KeyValue{Key: string(kv.Key[len(s.data):]), Value: kv.Value, ModRev: kv.ModRevision}); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Replace deletes everything and writes kvs in transactions of at most
// maxTxnOps operations: etcd caps the size of one transaction, so this is
// not atomic. inventory.Store.Restore writes the schema key last, so a
// store cut off half-way is refused at the next open instead of being used.
func (s *KV) Replace(ctx context.Context, kvs []inventory.KeyValue) error {
	from, end := s.rangeOf(inventory.KeyRange{})
	if _, err := s.cli.Delete(ctx, from, clientv3.WithRange(end)); err != nil {
		return fmt.Errorf("etcd replace: %w", err)
	}
	for len(kvs) > 0 {
		n := min(len(kvs), maxTxnOps)
		ops := make([]clientv3.Op, n)
		for i, kv := range kvs[:n] {
			ops[i] = clientv3.OpPut(s.data+kv.Key, string(kv.Value))
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("etcd replace: %w", err)
		}
		kvs = kvs[n:]
	}
	return nil
}

func (s *KV) Election(name string) (inventory.Election, error) {
	e := &election{kv: s, pfx: s.elect + name + "/", done: make(chan struct{})}
	close(e.done) // not leader yet
	s.mu.Lock()
	s.elected = append(s.elected, e)
	s.mu.Unlock()
	return e, nil
}

// Close ends elections (their sessions' leases are revoked, so another
// server takes over at once rather than after the TTL) and the client.
func (s *KV) Close() error {
	s.mu.Lock()
	els := s.elected
	s.elected = nil
	s.mu.Unlock()
	for _, e := range els {
		e.close()
	}
	return s.cli.Close()
}

// election is one server's part in an etcd election. Leadership is tied to
// an etcd session (a lease kept alive by the client): when the session
// expires (the server hung, lost the cluster) Done closes.
type election struct {
	kv     *KV
	pfx    string
	mu     sync.Mutex
	sess   *concurrency.Session
	el     *concurrency.Election
	leader bool
	done   chan struct{}
}

func (e *election) Campaign(ctx context.Context) error {
	e.mu.Lock()
	if e.leader {
		e.mu.Unlock()
		return nil
	}
	sess := e.sess
	if sess == nil || isClosed(sess.Done()) {
		var err error
		sess, err = concurrency.NewSession(e.kv.cli, concurrency.WithTTL(e.kv.ttl))
		if err != nil {
			e.mu.Unlock()
			return fmt.Errorf("etcd election %s: session: %w", e.pfx, err)
		}
		e.sess = sess
	}
	el := concurrency.NewElection(sess, e.pfx)
	e.mu.Unlock()

	host, _ := os.Hostname()
	if err := el.Campaign(ctx, fmt.Sprintf("%s pid %d", host, os.Getpid())); err != nil {
		return fmt.Errorf("etcd election %s: %w", e.pfx, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.el, e.leader = el, true
	done := make(chan struct{})
	e.done = done
	go func() {
		<-sess.Done()
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.done == done && e.leader {
			e.leader = false
			close(done)
		}
	}()
	e.kv.log.Info("elected leader", "election", e.pfx)
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (e *election) Resign(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.leader {
		return nil
	}
	e.leader = false
	close(e.done)
	if err := e.el.Resign(ctx); err != nil {
		return fmt.Errorf("etcd election %s: resign: %w", e.pfx, err)
	}
	return nil
}

func (e *election) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leader
}

func (e *election) Done() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.done
}

func (e *election) close() {
	e.mu.Lock()
	sess := e.sess
	e.sess = nil
	e.mu.Unlock()
	if sess != nil {
		sess.Close()
	}
}
