// Package ipampool owns the node's warm pool of VNet addresses: the state of every address
// (Available, Assigned, Cooldown, PendingRelease, plus a count of Pending additions whose
// addresses the cloud has not chosen yet) and the policy that decides when to grow or shrink
// the pool.
//
// Everything here is pure and deterministic: time is a parameter, nothing does I/O, nothing
// locks. The caller (cns) serialises access, persists changes and talks to the cloud.
//
// Invariants kept by Pool:
//   - an Assigned address belongs to exactly one key, and a key holds at most one address;
//   - an Assigned address is never handed out again and never chosen for release;
//   - a released address rests in Cooldown until its deadline before it can be reassigned;
//   - only addresses of cns's own ip configurations are adopted; one on a foreign
//     configuration stays only while a pod holds it, and then leaves the pool.
package ipampool
