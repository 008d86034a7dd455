package legacy

import "strings"

// looksLikeNumber is Perl's looks_like_number (grok_number) on a string,
// which YAML::XS consults to single-quote numeric-looking strings:
// optional surrounding whitespace and sign, decimal digits with an optional
// fraction and exponent, Inf/Infinity/NaN in any case, and "0 but true".
func looksLikeNumber(s string) bool {
	if s == "0 but true" {
		return true
	}
	isSpace := func(c byte) bool { return c == ' ' || c >= '\t' && c <= '\r' }
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if n := digits(); n > 0 || i+1 < len(s) && s[i] == '.' && s[i+1] >= '0' && s[i+1] <= '9' {
		if i < len(s) && s[i] == '.' {
			i++
			digits()
		}
		if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
			i++
			if i < len(s) && (s[i] == '+' || s[i] == '-') {
				i++
			}
			if digits() == 0 {
				return false
			}
		}
	} else {
		rest := strings.ToLower(s[i:])
		j := len(rest)
		for j > 0 && isSpace(rest[j-1]) {
			j--
		}
		switch w := rest[:j]; {
		case w == "inf" || w == "infinity" || w == "nan" || w == "nanq" || w == "nans" || w == "qnan" || w == "snan":
			return true
		case strings.HasPrefix(w, "nan(") && strings.HasSuffix(w, ")"):
			return true
		}
		return false
	}
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i == len(s)
}
