package inventory

import (
	"context"
	"fmt"
	"strconv"
)

func (s *store) Dump(ctx context.Context, fn func(Record) error) (DumpInfo, error) {
	info := DumpInfo{Schema: s.current}
	rev, err := s.kv.Dump(ctx, func(kv KeyValue) error {
		if kv.Key == keySchema {
			if v, err := strconv.Atoi(string(kv.Value)); err == nil {
				info.Schema = v
			}
		}
		info.Records++
		return fn(Record{Key: kv.Key, Value: kv.Value})
	})
	if err != nil {
		return DumpInfo{}, fmt.Errorf("dump state store: %w", err)
	}
	info.Revision = rev
	return info, nil
}

func (s *store) Restore(ctx context.Context, records []Record, opts RestoreOptions) error {
	version := -1
	kvs := make([]KeyValue, 0, len(records))
	for _, r := range records {
		if r.Key == keySchema {
			v, err := strconv.Atoi(string(r.Value))
			if err != nil {
				return fmt.Errorf("restore: schema version %q: %w", r.Value, ErrInvalid)
			}
			version = v
			continue
		}
		kvs = append(kvs, KeyValue{Key: r.Key, Value: r.Value})
	}
	// The schema key goes last: where Replace is not atomic (etcd), a
	// restore cut off half-way leaves a store Open refuses ("data but no
	// schema version") rather than a silently partial one.
	kvs = append(kvs, KeyValue{Key: keySchema, Value: []byte(strconv.Itoa(version))})
	if version < 0 {
		return fmt.Errorf("restore: the snapshot has no schema version: %w", ErrInvalid)
	}
	if err := checkSchema(version, s.current); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if !opts.Replace {
		// A freshly opened store holds only its schema key.
		held, _, err := s.kv.List(ctx, KeyRange{Limit: 2})
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		for _, kv := range held {
			if kv.Key != keySchema {
				return fmt.Errorf("restore: it holds %s: %w", kv.Key, ErrNotEmpty)
			}
		}
	}
	if err := s.kv.Replace(ctx, kvs); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	s.log.Info("restored state store", "records", len(kvs), "schema", version)
	if version < s.current {
		v, rev, err := s.readSchema(ctx)
		if err != nil {
			return err
		}
		return s.migrate(ctx, v, rev)
	}
	return nil
}
