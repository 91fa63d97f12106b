package build

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"alpinespine.org/spine/internal/format/policy"
	"alpinespine.org/spine/internal/host/tree"
)

// maxIDFile bounds /etc/passwd and /etc/group as the build reads them from a persona's tree.
const maxIDFile = 1 << 20

// idEntry is one line of /etc/passwd (name, uid, gid, home) or /etc/group (name, gid).
type idEntry struct {
	name     string
	id, gid  uint32
	home     string
	hasGroup bool
}

// parseIDFile reads /etc/passwd (passwd true: name:x:uid:gid:gecos:home:shell) or /etc/group
// (name:x:gid:members), as passwd(5) and group(5) describe them. Comments, blank lines and NIS
// "+"/"-" lines are skipped; a line with a bad id is an error naming its number.
func parseIDFile(b []byte, passwd bool) ([]idEntry, error) {
	var out []idEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxIDFile)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		f := strings.Split(line, ":")
		want := 4
		if passwd {
			want = 7
		}
		if len(f) < want || f[0] == "" {
			return nil, fmt.Errorf("line %d: %d fields, want %d", n, len(f), want)
		}
		id, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("line %d: id %q: not a number", n, f[2])
		}
		e := idEntry{name: f[0], id: uint32(id)}
		if passwd {
			gid, err := strconv.ParseUint(f[3], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("line %d: gid %q: not a number", n, f[3])
			}
			e.gid, e.home, e.hasGroup = uint32(gid), f[5], true
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// resolvedUser is a persona's user as spine build bakes it.
type resolvedUser struct {
	uid, gid uint32
	// home is the user's home directory from /etc/passwd, "" if it has no entry.
	home string
}

// resolveUser resolves a user setting (NAME, UID, NAME:GROUP, UID:GID) in the tree's
// /etc/passwd and /etc/group, as a container runtime does: a name must be there; a uid that is
// there takes its entry's gid and home, one that is not gets gid 0.
func resolveUser(spec string, t *tree.Tree) (resolvedUser, error) {
	user, group, hasGroup := strings.Cut(spec, ":")
	var r resolvedUser
	lookup := func(file string, passwd bool, key string) (idEntry, bool, error) {
		b, err := t.ReadFile(file, maxIDFile)
		if errors.Is(err, fs.ErrNotExist) {
			return idEntry{}, false, nil
		}
		if err != nil {
			return idEntry{}, false, err
		}
		es, err := parseIDFile(b, passwd)
		if err != nil {
			return idEntry{}, false, fmt.Errorf("%s: %w", file, err)
		}
		for _, e := range es {
			if e.name == key || strconv.FormatUint(uint64(e.id), 10) == key {
				return e, true, nil
			}
		}
		return idEntry{}, false, nil
	}
	e, found, err := lookup("/etc/passwd", true, user)
	if err != nil {
		return r, err
	}
	switch n, nerr := strconv.ParseUint(user, 10, 32); {
	case found:
		r.uid, r.gid, r.home = e.id, e.gid, e.home
	case nerr == nil:
		r.uid = uint32(n)
	default:
		return r, fmt.Errorf("user %q: no such user in the persona's /etc/passwd", user)
	}
	if hasGroup {
		g, found, err := lookup("/etc/group", false, group)
		if err != nil {
			return r, err
		}
		switch n, nerr := strconv.ParseUint(group, 10, 32); {
		case found:
			r.gid = g.id
		case nerr == nil:
			r.gid = uint32(n)
		default:
			return r, fmt.Errorf("group %q: no such group in the persona's /etc/group", group)
		}
	}
	if r.uid > policy.MaxID || r.gid > policy.MaxID {
		return r, fmt.Errorf("user %q is %d:%d, above %d, the last id of a persona's namespace", spec, r.uid, r.gid, policy.MaxID)
	}
	return r, nil
}

// applyUser fills in the persona's user: the policy's, else the image's; names are resolved in
// the finished tree and the policy gets UID:GID, plus HOME from /etc/passwd when its env sets
// none (as container runtimes do).
func applyUser(q policy.Persona, imageUser string, t *tree.Tree) (policy.Persona, error) {
	spec, from := q.User, "user"
	if spec == "" {
		spec, from = imageUser, "the image's User"
	}
	if spec == "" {
		return q, nil
	}
	probe := q
	probe.User = spec
	if err := probe.ValidateUser(); err != nil {
		return q, fmt.Errorf("%s: %w", from, err)
	}
	r, err := resolveUser(spec, t)
	if err != nil {
		return q, fmt.Errorf("%s: %w", from, err)
	}
	q.User = fmt.Sprintf("%d:%d", r.uid, r.gid)
	if r.home != "" && !hasEnv(q.Env, "HOME") {
		q.Env = append(q.Env, "HOME="+r.home)
	}
	return q, nil
}

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, key+"=") {
			return true
		}
	}
	return false
}
