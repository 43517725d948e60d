// Package ratelog throttles log lines a guest can trigger at will (a
// malformed descriptor chain, a protocol violation): without a limit, a
// hostile guest turns the daemon's log into a denial of service (tens of
// thousands of lines a second). A Limiter lets one line through per
// interval and counts the ones it held back, so the next line that passes
// can say how many were suppressed.
//
// It is a dozen lines on sync/atomic rather than a dependency: the check
// sits on paths a guest drives, must not take a lock or allocate, and
// golang.org/x/time/rate (a token bucket with a mutex) answers a different
// question.
package ratelog
