package integration

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/internal/testkit"
)

// rotationNode starts a primary-region app serving the executor with the
// given secrets, and returns its address and a function that stops it.
func rotationNode(t *testing.T, d *secDB, secret string, old ...string) (string, func()) {
	t.Helper()
	db := openGORM(t, d.dsn)
	p := flypg.New(flypg.Config{Region: primaryRegion, PrimaryRegion: primaryRegion, Secret: secret, OldSecrets: old, PrimaryDSN: d.dsn})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	return testkit.Serve(t, p), func() { p.Close() }
}

// rotationApp starts a replica-region app forwarding to target with the
// given secrets.
func rotationApp(t *testing.T, d *secDB, target, secret string, old ...string) *gorm.DB {
	t.Helper()
	db := openGORM(t, requireCluster(t).Replicas[0].DSN(d.name))
	p := flypg.New(flypg.Config{Region: replicaRegion, PrimaryRegion: primaryRegion, PrimaryAddr: target, Secret: secret, OldSecrets: old})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return db
}

// TestSecuritySecretRotationLosesNoWrite rolls the shared secret through
// a deployment the way the README says: first every node gets the new
// secret with the old one as additional, then the old one is dropped. At
// each step nodes of both kinds run side by side, in every pairing of
// client and executor, and every write succeeds exactly once.
func TestSecuritySecretRotationLosesNoWrite(t *testing.T) {
	t.Parallel()
	const oldSecret, newSecret = testkit.Secret, "the-rotated-secret-0123456789abcdef"
	d := newSecDB(t)

	var mu sync.Mutex
	acked := map[string]bool{}
	var failures []string
	// writeFrom writes n keys through each app, all apps at once.
	writeFrom := func(step string, apps map[string]*gorm.DB) {
		var wg sync.WaitGroup
		for name, db := range apps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					key := fmt.Sprintf("%s/%s/%d", step, name, i)
					err := db.Exec(`INSERT INTO sec_writes (key) VALUES (?)`, key).Error
					mu.Lock()
					if err != nil {
						failures = append(failures, fmt.Sprintf("%s: %v", key, err))
					} else {
						acked[key] = true
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}

	// Before: every node has the old secret.
	e1, stopE1 := rotationNode(t, d, oldSecret)
	writeFrom("before", map[string]*gorm.DB{"old->old": rotationApp(t, d, e1, oldSecret)})

	// Step 1, rolling: nodes restarted with the new secret and the old one
	// as additional work with those not restarted yet, both ways.
	e2, _ := rotationNode(t, d, newSecret, oldSecret)
	writeFrom("step1", map[string]*gorm.DB{
		"old->old":         rotationApp(t, d, e1, oldSecret),
		"rolling->old":     rotationApp(t, d, e1, newSecret, oldSecret),
		"old->rolling":     rotationApp(t, d, e2, oldSecret),
		"rolling->rolling": rotationApp(t, d, e2, newSecret, oldSecret),
	})
	// Skipping step 1 would not work: a node with only the new secret and
	// one with only the old cannot talk.
	err := rotationApp(t, d, e1, newSecret).Exec(`INSERT INTO sec_writes (key) VALUES ('skipped-step')`).Error
	if !errors.Is(err, flypg.ErrUnauthenticated) {
		t.Errorf("a node with only the new secret writing to one with only the old: %v, want ErrUnauthenticated", err)
	}
	stopE1()

	// Step 2, rolling: the old secret is dropped node by node.
	e3, _ := rotationNode(t, d, newSecret)
	writeFrom("step2", map[string]*gorm.DB{
		"rolling->rolling": rotationApp(t, d, e2, newSecret, oldSecret),
		"new->rolling":     rotationApp(t, d, e2, newSecret),
		"rolling->new":     rotationApp(t, d, e3, newSecret, oldSecret),
		"new->new":         rotationApp(t, d, e3, newSecret),
	})

	for _, f := range failures {
		t.Errorf("write failed during the rotation: %s", f)
	}
	for key := range acked {
		if n := d.count(t, key); n != 1 {
			t.Errorf("acknowledged write %s is on the primary %d times", key, n)
		}
	}
	if n := d.count(t, "skipped-step"); n != 0 {
		t.Error("a refused write is on the primary")
	}
	if want := 10 * (1 + 4 + 4); len(acked) != want {
		t.Errorf("%d writes acknowledged, want %d", len(acked), want)
	}
}
