package clickhouse

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// cursor is how far the exporter got, persisted beside the spool. InflightFirst..Last is
// the batch being sent: written before the send and cleared after ClickHouse acknowledged
// it, so that an exporter restarted after a crash resends exactly that batch (identical
// rows, hence identical rollup rows; see activityDDL) before anything else.
type cursor struct {
	Shipped       uint64 `json:"shipped"`
	InflightFirst uint64 `json:"inflight_first,omitempty"`
	InflightLast  uint64 `json:"inflight_last,omitempty"`
}

func loadCursor(path string) (cursor, error) {
	var c cursor
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("reading export cursor: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("export cursor %s is corrupt (delete it to resend the whole spool; retried rows are deduplicated): %w", path, err)
	}
	return c, nil
}

// save writes the cursor atomically: a temp file, fsync, rename, fsync of the directory.
// A crash leaves either the old or the new cursor, never a torn one.
func (c cursor) save(path string) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("writing export cursor: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing export cursor: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing export cursor: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing export cursor: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replacing export cursor: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("syncing export cursor directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing export cursor directory: %w", err)
	}
	return nil
}
