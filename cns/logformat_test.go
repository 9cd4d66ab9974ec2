package cns

import (
	"bytes"
	"encoding/json"
	"testing"
)

// --log-format json writes one JSON object per line, as log collectors expect.
func TestLogFormatJSONWritesOneObjectPerLine(t *testing.T) {
	c := DefaultConfig()
	c.LogFormat = "json"
	var buf bytes.Buffer
	log, err := c.NewLogger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("pool open", "available", 8)
	var rec map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &rec); err != nil {
		t.Fatalf("not one JSON object: %q: %v", buf.String(), err)
	}
	if rec["msg"] != "pool open" || rec["available"] != float64(8) || rec["level"] != "INFO" {
		t.Errorf("record %v", rec)
	}
	c.LogFormat = "xml"
	if _, err := c.NewLogger(&buf); err == nil {
		t.Error("--log-format xml accepted")
	}
}
