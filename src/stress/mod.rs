//! Stress scenarios (placeholder until the stress engine lands).
