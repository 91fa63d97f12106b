package conformance

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Constitution is what the report reads from the law itself: its version and every sentence
// that binds the implementation.
type Constitution struct {
	Version      string
	Requirements []Requirement
}

// Requirement is one binding item of the constitution: an item of a MUST, MUST NOT, MAY or
// guarantees list, or a sentence that says MUST on its own.
type Requirement struct {
	// Article is where it stands, as "IV §2".
	Article string
	// Lead is the sentence that introduces a list ("/persist MUST:"), empty for a sentence that
	// stands alone.
	Lead string
	// Text is the item or sentence, exactly as written.
	Text string
}

func (r Requirement) String() string {
	if r.Lead == "" {
		return fmt.Sprintf("%s: %s", r.Article, r.Text)
	}
	return fmt.Sprintf("%s: %s %s", r.Article, r.Lead, r.Text)
}

var (
	versionRE = regexp.MustCompile(`^Status:\s*v([0-9][0-9.]*)`)
	articleRE = regexp.MustCompile(`^ARTICLE ([IVX]+)\b`)
	sectionRE = regexp.MustCompile(`^§([0-9]+)\.`)
	// bindingRE finds the words that make a sentence or a list bind the implementation: the
	// modal verbs, the guarantees, the mechanical consequences ("results in", "reverts"), the
	// exclusive statements ("There is", "only allowed", "only authority", "either ... or") and
	// the boot law's "final". "does NOT" (the out-of-scope list) and "MAY ONLY" (the amendment
	// procedure) bind nobody's code.
	bindingRE = regexp.MustCompile(`\b(MUST|must|MAY NEVER|MAY|may|guarantees|results in|reverts|only allowed|only authority|either|final)\b|^There is\b|^No exceptions\b`)
)

// ParseConstitution reads the constitution's text. It knows the document's plain shape (articles,
// numbered sections, lists introduced by a line ending in a colon, one item per line) and
// nothing of its content, so a clause added by a new version is found without a code change.
func ParseConstitution(r io.Reader) (Constitution, error) {
	var c Constitution
	article, section := "", ""
	lead := "" // the open list's introduction, if a list is open
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), ">"))
		line = strings.TrimSpace(line)
		if m := versionRE.FindStringSubmatch(line); m != nil && c.Version == "" {
			c.Version = m[1]
			continue
		}
		if m := articleRE.FindStringSubmatch(line); m != nil {
			article, section, lead = m[1], "", ""
			continue
		}
		if m := sectionRE.FindStringSubmatch(line); m != nil {
			section, lead = m[1], ""
			continue
		}
		if line == "" || article == "" || section == "" {
			continue
		}
		where := article + " §" + section
		if strings.HasSuffix(line, ":") {
			lead = ""
			if bindingRE.MatchString(line) && !strings.Contains(line, "MAY ONLY") {
				lead = strings.TrimSuffix(line, ":")
			}
			continue
		}
		if lead != "" && !strings.HasSuffix(line, ".") {
			c.Requirements = append(c.Requirements, Requirement{Article: where, Lead: lead, Text: itemText(line)})
			continue
		}
		lead = ""
		if bindingRE.MatchString(line) {
			c.Requirements = append(c.Requirements, Requirement{Article: where, Text: line})
		}
	}
	if err := sc.Err(); err != nil {
		return Constitution{}, fmt.Errorf("read constitution: %w", err)
	}
	if c.Version == "" {
		return Constitution{}, fmt.Errorf("constitution: no \"Status: vN\" line")
	}
	if len(c.Requirements) == 0 {
		return Constitution{}, fmt.Errorf("constitution: no binding clause found")
	}
	return c, nil
}

// itemText drops a list number ("1. Be immutable at runtime").
func itemText(line string) string {
	if i := strings.Index(line, ". "); i > 0 && i <= 3 && strings.Trim(line[:i], "0123456789") == "" {
		return line[i+2:]
	}
	return line
}
