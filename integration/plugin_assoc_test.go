package integration

import (
	"fmt"
	"slices"
	"testing"

	"gorm.io/gorm"
)

type orderView struct {
	Number     int
	Status     string
	TotalCents int64
	Lines      []string // "line_no:sku x qty @ price"
}

type userView struct {
	ID       uint
	Name     string
	Email    string
	Age      int
	Company  string
	Bio      string
	Settings Settings
	Tags     []string
	Orders   []orderView
}

// loadUser reads a user with every association, in a stable order.
func loadUser(t *testing.T, db *gorm.DB, id uint) User {
	t.Helper()
	var u User
	ok(t, db.
		Preload("Company").
		Preload("Profile").
		Preload("Tags", func(q *gorm.DB) *gorm.DB { return q.Order("name") }).
		Preload("Orders", func(q *gorm.DB) *gorm.DB { return q.Order("number") }).
		Preload("Orders.Lines", func(q *gorm.DB) *gorm.DB { return q.Order("line_no") }).
		First(&u, id))
	return u
}

// viewUser normalizes a loaded user and checks the invariants that hold in
// every run: UUID order keys, lines pointing at their order.
func viewUser(t *testing.T, u User) userView {
	t.Helper()
	v := userView{ID: u.ID, Name: u.Name, Email: u.Email, Age: u.Age, Tags: tagNames(u.Tags)}
	if u.Company != nil {
		v.Company = u.Company.Name
		if u.CompanyID == nil || *u.CompanyID != u.Company.ID {
			t.Errorf("user %d: company_id %v but company %d", u.ID, u.CompanyID, u.Company.ID)
		}
	}
	if u.Profile != nil {
		v.Bio, v.Settings = u.Profile.Bio, u.Profile.Settings
		if u.Profile.UserID != u.ID {
			t.Errorf("profile %d belongs to user %d, not %d", u.Profile.ID, u.Profile.UserID, u.ID)
		}
	}
	for _, o := range u.Orders {
		if !uuidRE.MatchString(o.ID) {
			t.Errorf("order %d: id %q is not a UUID", o.Number, o.ID)
		}
		ov := orderView{Number: o.Number, Status: o.Status, TotalCents: o.TotalCents}
		for _, l := range o.Lines {
			if l.OrderID != o.ID {
				t.Errorf("line %d of order %d points at order %s", l.LineNo, o.Number, l.OrderID)
			}
			ov.Lines = append(ov.Lines, fmt.Sprintf("%d:%s x%d @%d", l.LineNo, l.SKU, l.Qty, l.PriceCents))
		}
		v.Orders = append(v.Orders, ov)
	}
	return v
}

func wantTags(t *testing.T, db *gorm.DB, u *User, want ...string) {
	t.Helper()
	got := tagNames(loadUser(t, db, u.ID).Tags)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("user %d tags = %v, want %v (read right after the write)", u.ID, got, want)
	}
}

// scenarioAssociations exercises belongs-to, has-one, has-many (nested, with
// UUID and composite keys) and many2many through user_tags.
func scenarioAssociations(t *testing.T, db *gorm.DB, tr *transcript) {
	acme := Company{Name: "Acme"}
	ok(t, db.Create(&acme))
	var c Company
	ok(t, db.First(&c, acme.ID))
	if c.Name != "Acme" {
		t.Fatalf("company read back as %+v", c)
	}
	tr.add("company", []any{c.ID, c.Name})

	alice := User{
		Name: "Alice", Email: "alice@example.com", Age: 34, Company: &acme,
		Profile: &Profile{Bio: "gopher", Settings: Settings{Theme: "dark", Notifications: true, Langs: []string{"go", "sql"}}},
		Tags:    []Tag{{Name: "go"}, {Name: "sql"}},
		Orders: []Order{{Number: 1001, TotalCents: 2500, Lines: []OrderLine{
			{LineNo: 1, SKU: "A-1", Qty: 2, PriceCents: 1000},
			{LineNo: 2, SKU: "B-2", Qty: 1, PriceCents: 500},
		}}},
	}
	ok(t, db.Create(&alice))
	if alice.ID == 0 || alice.CompanyID == nil || *alice.CompanyID != acme.ID {
		t.Fatalf("create with belongs-to: id %d company_id %v, want company %d", alice.ID, alice.CompanyID, acme.ID)
	}
	if alice.Profile.ID == 0 || alice.Profile.UserID != alice.ID {
		t.Fatalf("has-one not filled in: %+v", alice.Profile)
	}
	if !uuidRE.MatchString(alice.Orders[0].ID) || alice.Orders[0].Lines[1].OrderID != alice.Orders[0].ID {
		t.Fatalf("has-many with UUID key not filled in: %+v", alice.Orders[0])
	}
	for _, tg := range alice.Tags {
		if tg.ID == 0 {
			t.Fatalf("many2many tag %q has no ID", tg.Name)
		}
	}
	u := loadUser(t, db, alice.ID)
	v := viewUser(t, u)
	if v.Company != "Acme" || v.Bio != "gopher" || join(v.Tags) != "go,sql" || len(v.Orders) != 1 || len(v.Orders[0].Lines) != 2 || v.Orders[0].Status != "new" {
		t.Fatalf("user with associations read back as %+v", v)
	}
	if u.Orders[0].ID != alice.Orders[0].ID {
		t.Fatalf("order UUID read back %s, create returned %s", u.Orders[0].ID, alice.Orders[0].ID)
	}
	tr.add("alice", v)

	// many2many through user_tags.
	tags := db.Model(&alice).Association("Tags")
	noErr(t, tags.Append(&Tag{Name: "rust"}))
	wantTags(t, db, &alice, "go", "rust", "sql")
	tr.add("append", tagNames(loadUser(t, db, alice.ID).Tags))

	var goTag Tag
	ok(t, db.Where("name = ?", "go").First(&goTag))
	noErr(t, db.Model(&alice).Association("Tags").Replace(&goTag, &Tag{Name: "ops"}))
	wantTags(t, db, &alice, "go", "ops")
	tr.add("replace", tagNames(loadUser(t, db, alice.ID).Tags))

	noErr(t, db.Model(&alice).Association("Tags").Delete(&goTag))
	wantTags(t, db, &alice, "ops")
	if n := db.Model(&alice).Association("Tags").Count(); n != 1 {
		t.Fatalf("association count %d, want 1", n)
	}
	if n := countRows(t, db, "tags", "name = ?", "go"); n != 1 {
		t.Fatalf("Association.Delete removed the tag itself (%d rows)", n)
	}
	tr.add("delete", tagNames(loadUser(t, db, alice.ID).Tags))

	noErr(t, db.Model(&alice).Association("Tags").Clear())
	wantTags(t, db, &alice)
	if n := countRows(t, db, "user_tags", "user_id = ?", alice.ID); n != 0 {
		t.Fatalf("user_tags still has %d rows after Clear", n)
	}
	tr.add("clear", countRows(t, db, "tags", ""))

	// A second user shares existing tags.
	bob := User{Name: "Bob", Email: "bob@example.com", Age: 17, CompanyID: &acme.ID}
	ok(t, db.Create(&bob))
	var existing []Tag
	ok(t, db.Where("name IN ?", []string{"go", "sql"}).Order("name").Find(&existing))
	noErr(t, db.Model(&bob).Association("Tags").Append(existing))
	wantTags(t, db, &bob, "go", "sql")
	tr.add("bob", viewUser(t, loadUser(t, db, bob.ID)))

	// has-many: append an order with lines.
	// (Association.Append does not save nested associations: the lines
	// of the new order are created on their own, with their composite key.)
	order := Order{Number: 1002, Status: "paid", TotalCents: 300}
	noErr(t, db.Model(&alice).Association("Orders").Append(&order))
	if !uuidRE.MatchString(order.ID) || order.UserID != alice.ID {
		t.Fatalf("appended order: %+v", order)
	}
	ok(t, db.Create(&[]OrderLine{{OrderID: order.ID, LineNo: 1, SKU: "C-3", Qty: 3, PriceCents: 100}}))
	v = viewUser(t, loadUser(t, db, alice.ID))
	if len(v.Orders) != 2 || v.Orders[1].Number != 1002 || len(v.Orders[1].Lines) != 1 {
		t.Fatalf("appended order not read back: %+v", v.Orders)
	}
	tr.add("orders", v.Orders)

	// belongs-to: move alice to a new company.
	globex := Company{Name: "Globex"}
	noErr(t, db.Model(&alice).Association("Company").Replace(&globex))
	if globex.ID == 0 {
		t.Fatal("belongs-to Replace did not create the company")
	}
	u = loadUser(t, db, alice.ID)
	if u.Company == nil || u.Company.Name != "Globex" {
		t.Fatalf("belongs-to replaced, read back company %+v", u.Company)
	}
	tr.add("moved", viewUser(t, u))

	// has-one: update the profile; JSONB changes with it.
	ok(t, db.Model(u.Profile).Updates(map[string]any{"bio": "moved to Globex", "settings": Settings{Theme: "light", Limits: map[string]int{"orders": 5}}}))
	u = loadUser(t, db, alice.ID)
	if u.Profile.Bio != "moved to Globex" || u.Profile.Settings.Theme != "light" || u.Profile.Settings.Limits["orders"] != 5 {
		t.Fatalf("profile update read back as %+v", u.Profile)
	}
	tr.add("profile", viewUser(t, u))

	// has-one for a user without a profile.
	noErr(t, db.Model(&bob).Association("Profile").Append(&Profile{Bio: "bob's"}))
	if p := loadUser(t, db, bob.ID).Profile; p == nil || p.Bio != "bob's" {
		t.Fatalf("has-one Append read back %+v", p)
	}

	// Preload from the other side, and Joins on the belongs-to.
	var companies []Company
	ok(t, db.Preload("Users", func(q *gorm.DB) *gorm.DB { return q.Order("id") }).Order("id").Find(&companies))
	var members []string
	for _, co := range companies {
		for _, m := range co.Users {
			members = append(members, co.Name+"/"+m.Name)
		}
	}
	if join(members) != "Acme/Bob,Globex/Alice" {
		t.Fatalf("companies with users: %v", members)
	}
	tr.add("members", members)

	var joined []User
	ok(t, db.Joins("Company").Where(`"Company".name = ?`, "Globex").Find(&joined))
	if len(joined) != 1 || joined[0].Name != "Alice" || joined[0].Company == nil || joined[0].Company.Name != "Globex" {
		t.Fatalf("Joins(Company): %+v", joined)
	}
	tr.add("joined", []any{joined[0].ID, joined[0].Company.Name})

	// Delete with its has-one and many2many associations, in one
	// transaction: the profile and the join rows go, the user is
	// soft-deleted, the tags stay.
	ok(t, db.Select("Profile", "Tags").Delete(&bob))
	if n := countRows(t, db, "profiles", "user_id = ?", bob.ID); n != 0 {
		t.Fatalf("bob's profile survived Select(Profile).Delete: %d", n)
	}
	if n := countRows(t, db, "user_tags", "user_id = ?", bob.ID); n != 0 {
		t.Fatalf("bob's user_tags survived Select(Tags).Delete: %d", n)
	}
	if !readUser(t, db, bob.ID).DeletedAt.Valid {
		t.Fatal("bob not soft-deleted")
	}
	// ...and restored.
	ok(t, db.Unscoped().Model(&User{}).Where("id = ?", bob.ID).Update("deleted_at", nil))
	var back User
	ok(t, db.First(&back, bob.ID))
	tr.add("restored", []any{back.ID, back.Name, countRows(t, db, "tags", "")})
}

// TestAssociations: belongs-to, has-one, has-many and many2many
// (Append/Replace/Delete/Clear) through the replica-region plugin give the
// same results as plain GORM on the primary, and each write is read back
// locally right away.
func TestAssociations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	runCompared(t, e, scenarioAssociations)
}
