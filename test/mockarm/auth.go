package mockarm

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// tokenLifetime is how long an issued token is accepted, as Entra ID's managed identity
// tokens (a day; azidentity refreshes well before).
const tokenLifetime = 24 * time.Hour

// claims is what an issued token says: whose it is and until when.
type claims struct {
	Subject  string `json:"sub"` // the node's ARM resource ID
	Audience string `json:"aud"`
	Expires  int64  `json:"exp"`
}

// issue signs a token for subject with the server's key (kept in the state file, so tokens
// outlive a restart of mockarm as they outlive an ARM front-end restart).
func (s *Server) issue(subject, audience string, now time.Time) (string, time.Time) {
	exp := now.Add(tokenLifetime)
	b, _ := json.Marshal(claims{Subject: subject, Audience: audience, Expires: exp.Unix()})
	payload := base64.RawURLEncoding.EncodeToString(b)
	return "mockarm." + payload + "." + s.sign(payload), exp
}

func (s *Server) sign(payload string) string {
	m := hmac.New(sha256.New, s.tokenKey)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// verify accepts a token mockarm issued and has not expired, or a configured static token.
func (s *Server) verify(token string, now time.Time) bool {
	if token == "" {
		return false
	}
	if slices.Contains(s.cfg.StaticTokens, token) {
		return true
	}
	rest, ok := strings.CutPrefix(token, "mockarm.")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || !hmac.Equal([]byte(sig), []byte(s.sign(payload))) {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	var c claims
	if err != nil || json.Unmarshal(b, &c) != nil {
		return false
	}
	return now.Unix() < c.Expires
}

// authenticate answers 401 as ARM does when a call carries no bearer token mockarm accepts.
// It reports whether the call may go on.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) bool {
	if !s.cfg.RequireToken {
		return true
	}
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		writeErr(w, &apiError{http.StatusUnauthorized, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.", 0})
		return false
	}
	if !s.verify(token, time.Now()) {
		writeErr(w, &apiError{http.StatusUnauthorized, "InvalidAuthenticationToken", "The access token is invalid or expired.", 0})
		return false
	}
	return true
}

func newTokenKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}
