package bench

import (
	"math"
	"os"
	"testing"
)

func TestProcStatusMiBReadsThisProcesssRSSAndItsParts(t *testing.T) {
	st, err := procStatusMiB(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	rss, parts := st["VmRSS:"], st["RssAnon:"]+st["RssFile:"]+st["RssShmem:"]
	if rss <= 0 || math.Abs(rss-parts) > 0.05 {
		t.Errorf("VmRSS %.2f MiB, its parts add up to %.2f (%v)", rss, parts, st)
	}
}
