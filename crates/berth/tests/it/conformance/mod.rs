//! Conformance tests derived from the OCI distribution spec's requirements: one test per
//! MUST that berth implements, each failing without it.
