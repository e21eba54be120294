//! The macro that declares a component's config struct: it adds the fields every component of
//! a family has (`type`, and `inputs` for transforms and sinks), derives serde and the JSON
//! Schema, and rejects unknown keys.

/// Declares a source config struct (`type` only, no inputs).
macro_rules! source_config {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The component type.
            #[serde(rename = "type")]
            pub kind: String,
            $($(#[$fm])* pub $f: $t,)*
        }

        impl $crate::config::HasInputs for $name {
            fn inputs(&self) -> &[String] {
                &[]
            }
        }
    };
}

/// Declares a transform or sink config struct (`type` and `inputs`).
macro_rules! node_config {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The component type.
            #[serde(rename = "type")]
            pub kind: String,
            /// Components (or `component.output` ports) whose events this one takes.
            pub inputs: Vec<String>,
            $($(#[$fm])* pub $f: $t,)*
        }

        impl $crate::config::HasInputs for $name {
            fn inputs(&self) -> &[String] {
                &self.inputs
            }
        }
    };
}

/// Declares a sink config struct (`type`, `inputs`, and the optional disk `buffer`).
macro_rules! sink_config {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        node_config! {
            $(#[$m])*
            pub struct $name {
                /// A write-ahead buffer on disk in front of the sink (none by default: events
                /// wait in memory, and upstream waits while the sink is slow or down).
                #[serde(default)]
                pub buffer: Option<$crate::config::sinks::DiskBufferConfig>,
                $($(#[$fm])* pub $f: $t,)*
            }
        }

        impl $crate::config::sinks::HasBuffer for $name {
            fn buffer(&self) -> Option<&$crate::config::sinks::DiskBufferConfig> {
                self.buffer.as_ref()
            }
        }
    };
}

/// Declares a family enum over kind structs, with typed dispatch by the `type` string.
macro_rules! family {
    ($(#[$m:meta])* pub enum $name:ident { $($kind:literal => $variant:ident($cfg:ty),)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone)]
        pub enum $name {
            $($variant($cfg),)*
        }

        impl $name {
            /// Every `type` this family accepts.
            pub const KINDS: &'static [&'static str] = &[$($kind,)*];

            /// The `type` string.
            pub fn kind(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => $kind,)*
                }
            }

            /// The components this one takes events from.
            pub fn inputs(&self) -> &[String] {
                use $crate::config::HasInputs;
                match self {
                    $($name::$variant(c) => c.inputs(),)*
                }
            }

            /// Each kind's own (root) schema, for the reference docs.
            pub fn root_schemas() -> Vec<(&'static str, schemars::Schema)> {
                vec![$(($kind, schemars::schema_for!($cfg)),)*]
            }

            /// The JSON Schema of each kind, by `type`.
            pub fn schemas(gen: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
                vec![$(($kind, gen.subschema_for::<$cfg>()),)*]
            }
        }

        impl $crate::config::Family for $name {
            const KINDS: &'static [&'static str] = $name::KINDS;

            fn deserialize_kind<'de, D: serde::Deserializer<'de>>(
                kind: &str,
                d: D,
            ) -> Result<Self, D::Error> {
                use serde::Deserialize;
                match kind {
                    $($kind => <$cfg>::deserialize(d).map($name::$variant),)*
                    other => Err(serde::de::Error::unknown_variant(other, Self::KINDS)),
                }
            }
        }
    };
}
