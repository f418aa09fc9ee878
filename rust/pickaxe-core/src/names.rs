//! Enums whose values are chosen by name from Python (`nan_policy="omit"`, `metric="l2"`,
//! `reduce="max"`): each is declared once with `named_enum!`, which gives it `FromStr`
//! (an unknown name is an argument error listing the names) and `name()`.

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`: the names as an error message lists them.
pub(crate) fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// A fieldless enum whose variants are named as the Python API spells them:
/// `named_enum! { /// doc  pub enum Metric("metric") { /// doc  L2 = "l2", ... } }`. The
/// string in parentheses is the argument an unknown name is reported against:
/// `metric must be "l2", "cosine" or "ip"; got "x"`.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident($arg:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $name:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $ty {
            $($(#[$vmeta])* $variant,)+
        }

        impl $ty {
            /// Every name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The name Python uses.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::Error;

            fn from_str(name: &str) -> Result<$ty, $crate::Error> {
                match name {
                    $($name => Ok($ty::$variant),)+
                    other => Err($crate::Error::argument(
                        $arg,
                        format!("{} must be {}; got {other:?}", $arg, $crate::names::one_of(Self::NAMES)),
                    )),
                }
            }
        }
    };
}
pub(crate) use named_enum;

#[cfg(test)]
mod tests {
    use super::one_of;

    #[test]
    fn lists_names_as_messages_do() {
        assert_eq!(one_of(&["raise"]), "\"raise\"");
        assert_eq!(one_of(&["raise", "omit"]), "\"raise\" or \"omit\"");
        assert_eq!(one_of(&["l2", "cosine", "ip"]), "\"l2\", \"cosine\" or \"ip\"");
    }
}
