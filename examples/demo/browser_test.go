package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flypg/flypg/pgtest"
)

// chromium returns the path of a Chromium (or Chrome) binary; without one
// the test is skipped, except in CI (.ci/run installs Debian's chromium).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH: CI must run the browser test (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH")
	return ""
}

// pageRow is what the page shows for one read.
type pageRow struct {
	Step     string `json:"step"`
	Region   string `json:"region"`
	RanOn    string `json:"ranOn"`
	Bookmark string `json:"bookmark"`
	Seen     string `json:"seen"`     // data attribute
	Shown    string `json:"shown"`    // the "saw the write" cell as displayed
	RanOnTxt string `json:"ranOnTxt"` // the "ran on" cell as displayed
}

// TestPageInBrowser drives the page at / in headless Chromium against the
// three-region demo: writes in ams read at once in syd under the bookmark
// show "yes" every time, and reads without it are shown with where they
// ran.
func TestPageInBrowser(t *testing.T) {
	exe := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	m := newMeter(io.Discard, replicaRegion)
	regs, err := startRegions(ctx, regionsConfig{rtt: 120 * time.Millisecond, nearRTT: 10 * time.Millisecond, onWrite: m.onWrite})
	if errors.Is(err, pgtest.ErrNoPostgres) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := regs.Close(); err != nil {
			t.Error(err)
		}
	}()
	srv := httptest.NewServer(m.wrap(handler(regs, &app{db: regs.replica.db, log: errorLogger()})))
	defer srv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	type css = chromedp.CSS
	if err := chromedp.Do(bctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(css("#run")),
		chromedp.SetValue(css("#write-region"), nearRegion),
		chromedp.SetValue(css("#read-region"), replicaRegion),
	); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	// click runs one write-then-read and waits until the page shows it.
	click := func(step int) {
		t.Helper()
		if err := chromedp.Do(bctx,
			chromedp.WaitEnabled(css("#run")),
			chromedp.Click(css("#run")),
			chromedp.WaitVisible(css(fmt.Sprintf(`#log tr[data-kind="read"][data-step="%d"]`, step))),
		); err != nil {
			status, _ := chromedp.Run(bctx, chromedp.Text(css("#status")))
			t.Fatalf("step %d: %v (status: %q)", step, err, status)
		}
	}
	const clicks = 5
	for i := 1; i <= clicks; i++ {
		click(i)
	}
	if err := chromedp.Do(bctx, chromedp.Click(css("#with-bookmark"))); err != nil {
		t.Fatal(err)
	}
	for i := clicks + 1; i <= 2*clicks; i++ {
		click(i)
	}

	rows, err := chromedp.Run(bctx, chromedp.Evaluate[[]pageRow](`[...document.querySelectorAll('#log tr[data-kind="read"]')].map(r => ({
		step: r.dataset.step, region: r.dataset.region, ranOn: r.dataset.ranOn, bookmark: r.dataset.bookmark,
		seen: r.dataset.seen, shown: r.cells[5].textContent, ranOnTxt: r.cells[3].textContent}))`))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2*clicks {
		t.Fatalf("the page shows %d reads, want %d: %+v", len(rows), 2*clicks, rows)
	}
	stale := 0
	for _, r := range rows {
		with := r.Bookmark == "yes"
		if r.Region != replicaRegion || (r.RanOn != "replica" && r.RanOn != "primary") {
			t.Errorf("read %s: region %q, ran on %q", r.Step, r.Region, r.RanOn)
		}
		if want := map[bool]string{true: "yes", false: "no"}[r.Seen == "true"]; r.Shown != want {
			t.Errorf("read %s: shows %q for seen=%s", r.Step, r.Shown, r.Seen)
		}
		if want := map[string]string{"replica": replicaRegion + " replica", "primary": "iad primary"}[r.RanOn]; r.RanOnTxt != want {
			t.Errorf("read %s: shows ran on %q, want %q", r.Step, r.RanOnTxt, want)
		}
		if with && r.Shown != "yes" {
			t.Errorf("read %s with the bookmark missed the write", r.Step)
		}
		if !with && r.Seen != "true" {
			stale++
		}
	}
	t.Logf("reads without the bookmark that missed the write: %d of %d", stale, clicks)
}
