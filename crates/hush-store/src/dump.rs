//! Rows as plain values, for copying a whole database from one adapter to another
//! (`hushd migrate`): the source reads a table's columns into [`Row`]s, the
//! destination writes them, each converting to its own column types.

/// One column's value, as stored.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

// Hand-written: rows hold password files, secrets and ciphertext.
impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("Null"),
            Value::Int(i) => write!(f, "Int({i})"),
            Value::Text(t) => write!(f, "Text({} chars)", t.chars().count()),
            Value::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
        }
    }
}

/// One row: a value per column, in the order asked for.
pub type Row = Vec<Value>;

/// Whether `name` can be spliced into SQL as a table or column name: lowercase
/// letters, digits and `_`, not starting with a digit.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["users", "group_members", "a1"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "1a", "users;drop", "Users", "a b", "\"x\""] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn values_never_print_their_bytes() {
        let v = Value::Bytes(b"secret".to_vec());
        assert!(!format!("{v:?}").contains("secret"));
        assert!(!format!("{:?}", Value::Text("secret".into())).contains("secret"));
    }
}
