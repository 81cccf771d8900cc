//! What stops the self-heal daemon from doing its work (as opposed to a
//! file it could not heal, which is a [`crate::HealOutcome`]).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealError {
    /// mgmtd could not be asked which volumes to heal, or refused.
    #[error("{0}")]
    Mgmt(String),
}
