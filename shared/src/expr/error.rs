//! The two error types of the expression language: one for syntax, one for evaluation.

/// Where a parse error is: byte offset into the parsed string, and a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at offset {offset})")]
pub struct ParseError {
    /// Byte offset into the parsed string; always on a char boundary and at most its length.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(offset: usize, message: impl Into<String>) -> Self {
        ParseError { offset, message: message.into() }
    }
}

/// Why evaluating an expression failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A path resolved to nothing: `expr` is the source text of the path, e.g. "pipeline.variables.nope".
    #[error("unresolved expression <+{expr}>")]
    Unresolved {
        /// Source text of the path that did not resolve.
        expr: String,
    },
    /// Wrong operand types, unknown method, bad arguments, index out of range...
    #[error("in <+{expr}>: {message}")]
    Type {
        /// Source text of the expression that failed.
        expr: String,
        /// What is wrong.
        message: String,
    },
}
