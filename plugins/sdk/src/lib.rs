//! Write TideGate policy plugins in Rust.
//!
//! A TideGate policy plugin is a WebAssembly component targeting the `plugin` world of
//! `tidegate:policy@0.1.0` (`wit/tidegate-policy@0.1.0/policy.wit`). TideGate loads it in a
//! sandbox with no WASI capability — no files, environment, clock other than [`now`], sockets or
//! network — and calls its hooks:
//!
//! | hook | when | default here |
//! | --- | --- | --- |
//! | [`Plugin::on_statement`] | before a statement runs: allow, deny or rewrite it | [`Decision::Allow`] |
//! | [`Plugin::on_rows`] | on each batch of result rows touching [`PluginInfo::columns`] | rows unchanged |
//! | [`Plugin::on_write_values`] | on values written to [`PluginInfo::columns`] | values unchanged |
//! | [`Plugin::on_audit`] | after a statement finished | no record |
//!
//! # Writing a plugin
//!
//! A plugin is a `cdylib` crate depending on this one:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! tidegate-plugin-sdk = { path = "../sdk" }
//! serde = { version = "1", default-features = false, features = ["derive", "alloc"] }
//! ```
//!
//! whose `lib.rs` starts with
//!
//! ```text
//! #![no_std]
//! extern crate alloc;
//! #[cfg(test)]
//! extern crate std;
//!
//! use tidegate_plugin_sdk::prelude::*; // String, Vec, BTreeMap, format!, vec!, …
//! ```
//!
//! implements [`Plugin`] for one type and registers it with [`export_plugin!`]. Build it with
//! `cargo build --release --target wasm32-wasip2`: the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component TideGate loads (a `cdylib` built for
//! wasm32-wasip2 is already a component).
//!
//! **Why `no_std`.** A plugin may import nothing but `tidegate:policy/host`, and Rust's `std` on
//! wasm32-wasip2 makes a component import `wasi:cli/*` and `wasi:io/*` (stdio, environment,
//! exit). So the SDK and plugins are `#![no_std]`, and the SDK's default `runtime` feature
//! supplies what `std` would on wasm32: a global allocator (`dlmalloc`), the canonical ABI's
//! `cabi_realloc` over it, wasi-libc's plain memory routines (`memcmp` & co., which call no WASI
//! function), and — through [`export_plugin!`] — a panic handler that logs the panic through the
//! host and traps. Dependencies must build without `std` (serde as above; serde_json with
//! `default-features = false, features = ["alloc"]`). A plugin that needs `std` anyway turns
//! `runtime` off and must be run by a host that links WASI for it.
//!
//! **Declare your hooks.** A Rust trait cannot tell which of its methods a type overrides, so
//! [`Plugin::info`] must name the hooks the plugin implements in [`PluginInfo::hooks`]
//! ([`Hooks::STATEMENT`], [`Hooks::ROWS`], [`Hooks::WRITE_VALUES`], [`Hooks::AUDIT`]).
//! TideGate calls only the declared hooks; an undeclared override is never called, and a
//! declared hook that is not overridden gets the "no opinion" default above.
//!
//! **State.** [`Plugin::init`] runs after loading and after every configuration reload; it
//! usually reads [`config`] and returns the plugin value the other hooks borrow as `&self`.
//! If it fails, the message is logged, the plugin is not used, and any previous value is
//! dropped. The value lives in the component instance: if the host runs a hook on an instance
//! whose `init` it did not call (say, a second instance for concurrent calls), the SDK calls
//! [`Plugin::init`] there first, and if that fails the hook traps and TideGate applies the
//! plugin's fail policy. So `init` should be cheap and depend only on [`config`].
//!
//! **Testing.** Natively (`cargo test`) there is no host: see [`host`] for how the host
//! functions behave there. Keep policy logic in plain functions over the types below, take the
//! host's cryptography as `&impl `[`crypto::Crypto`], and test that natively.
//!
//! # Examples
//!
//! Each example is a whole plugin crate's `lib.rs` but for the `#![no_std]` lines above.
//!
//! ## `on-statement`: deny writes on Sundays
//!
//! ```
//! use tidegate_plugin_sdk::prelude::*;
//! use tidegate_plugin_sdk::{export_plugin, Decision, Denial, Hooks, Plugin, PluginInfo,
//!     Statement, StatementKind};
//!
//! struct NoSundayWrites;
//!
//! impl Plugin for NoSundayWrites {
//!     fn init() -> Result<Self, String> {
//!         Ok(NoSundayWrites)
//!     }
//!     fn info(&self) -> PluginInfo {
//!         // Deterministic would be wrong: the decision depends on the clock.
//!         PluginInfo::new("no-sunday-writes", "1.0.0", Hooks::STATEMENT)
//!     }
//!     fn on_statement(&self, stmt: &Statement) -> Decision {
//!         let days = tidegate_plugin_sdk::now().div_euclid(86_400_000_000);
//!         let sunday = days.rem_euclid(7) == 3; // 1970-01-01 was a Thursday
//!         if sunday && stmt.kind == StatementKind::Write {
//!             return Decision::Deny(Denial::new("42501", "no writes on Sundays"));
//!         }
//!         Decision::Allow
//!     }
//! }
//!
//! export_plugin!(NoSundayWrites);
//! # fn main() {}
//! ```
//!
//! ## `on-rows`: mask a column, with configuration
//!
//! ```
//! use tidegate_plugin_sdk::prelude::*;
//! use serde::Deserialize;
//! use tidegate_plugin_sdk::{export_plugin, Column, Denial, Hooks, Plugin, PluginInfo,
//!     Statement, Value};
//!
//! #[derive(Deserialize)]
//! struct Mask {
//!     /// "table.column" to mask.
//!     column: String,
//! }
//!
//! impl Plugin for Mask {
//!     fn init() -> Result<Self, String> {
//!         tidegate_plugin_sdk::config() // `{"column": "users.email"}`
//!     }
//!     fn info(&self) -> PluginInfo {
//!         PluginInfo::new("mask", "1.0.0", Hooks::ROWS)
//!             .deterministic(true)
//!             .columns([self.column.clone()])
//!     }
//!     fn on_rows(
//!         &self,
//!         _stmt: &Statement,
//!         columns: &[Column],
//!         mut rows: Vec<Vec<Value>>,
//!     ) -> Result<Vec<Vec<Value>>, Denial> {
//!         for (i, column) in columns.iter().enumerate() {
//!             if column.matches(&self.column) {
//!                 for row in &mut rows {
//!                     if row[i].is_some() {
//!                         row[i] = Some(b"***".to_vec());
//!                     }
//!                 }
//!             }
//!         }
//!         Ok(rows)
//!     }
//! }
//!
//! export_plugin!(Mask);
//! # fn main() {}
//! ```
//!
//! ## `on-write-values`: refuse empty strings
//!
//! ```
//! use tidegate_plugin_sdk::prelude::*;
//! use tidegate_plugin_sdk::{export_plugin, BoundValue, Denial, Hooks, Plugin, PluginInfo,
//!     Statement, Value};
//!
//! struct NoEmptyNames;
//!
//! impl Plugin for NoEmptyNames {
//!     fn init() -> Result<Self, String> {
//!         Ok(NoEmptyNames)
//!     }
//!     fn info(&self) -> PluginInfo {
//!         PluginInfo::new("no-empty-names", "1.0.0", Hooks::WRITE_VALUES)
//!             .columns(["public.users.name"])
//!     }
//!     fn on_write_values(
//!         &self,
//!         _stmt: &Statement,
//!         values: Vec<BoundValue>,
//!     ) -> Result<Vec<Value>, Denial> {
//!         values
//!             .into_iter()
//!             .map(|v| match v.value.as_deref() {
//!                 Some(b"") => Err(Denial::new("23514", "a name may not be empty")
//!                     .with_hint("leave it NULL instead")),
//!                 _ => Ok(v.value),
//!             })
//!             .collect()
//!     }
//! }
//!
//! export_plugin!(NoEmptyNames);
//! # fn main() {}
//! ```
//!
//! ## `on-audit`: keep only denials, labelled
//!
//! ```
//! use tidegate_plugin_sdk::prelude::*;
//! use tidegate_plugin_sdk::{export_plugin, AuditEvent, AuditRecord, Hooks, Plugin,
//!     PluginInfo};
//!
//! struct Denials;
//!
//! impl Plugin for Denials {
//!     fn init() -> Result<Self, String> {
//!         Ok(Denials)
//!     }
//!     fn info(&self) -> PluginInfo {
//!         PluginInfo::new("denials", "1.0.0", Hooks::AUDIT)
//!     }
//!     fn on_audit(&self, event: AuditEvent) -> Option<AuditRecord> {
//!         (event.decision == "deny").then(|| AuditRecord {
//!             event,
//!             labels: vec![("severity".into(), "notice".into())],
//!         })
//!     }
//! }
//!
//! export_plugin!(Denials);
//! # fn main() {}
//! ```

#![no_std]

extern crate alloc;
#[cfg(any(test, not(target_arch = "wasm32")))]
extern crate std;

pub mod host;
#[cfg(all(target_arch = "wasm32", feature = "runtime"))]
mod runtime;
mod types;

pub mod testing;

/// What most plugins need from `alloc`: `use tidegate_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::collections::{BTreeMap, BTreeSet};
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
    pub use alloc::{format, vec};
}

use alloc::string::String;
use alloc::vec::Vec;

/// The bindings `wit-bindgen` generates for the `plugin` world. Prefer the re-exports at the
/// crate root; these are public for [`export_plugin!`] and for the rare plugin that needs the
/// raw interface.
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/tidegate-policy@0.1.0",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_raw",
        default_bindings_module: "tidegate_plugin_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::exports::tidegate::policy::policy::{Hooks, PluginInfo};
pub use bindings::tidegate::policy::types::{
    AuditEvent, AuditRecord, BoundValue, Column, Decision, Denial, Principal, Statement,
    StatementKind, TableRef, Value,
};
pub use host::{config, config_json, crypto, log, now, parse_config, CryptoError, LogLevel};

/// A policy plugin. Implement it for one type and register that type with
/// [`export_plugin!`].
///
/// Every hook has a "no opinion" default; override the ones the plugin implements **and name
/// them in [`PluginInfo::hooks`]** — TideGate calls only the declared hooks.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin, typically from [`config`]. Called after loading and after every
    /// reload, before any other hook. An error keeps the plugin from being used; TideGate logs
    /// the message.
    fn init() -> Result<Self, String>;

    /// Describes the plugin: its name, version, the hooks it implements, whether
    /// `on_statement` is deterministic, and the columns `on_rows`/`on_write_values` care
    /// about. Called once, right after a successful [`Plugin::init`].
    fn info(&self) -> PluginInfo;

    /// Decides about a statement before it runs. Default: [`Decision::Allow`].
    fn on_statement(&self, stmt: &Statement) -> Decision {
        let _ = stmt;
        Decision::Allow
    }

    /// Transforms a batch of result rows. Must return as many rows as it got, each with one
    /// value per column. Default: the rows unchanged.
    fn on_rows(
        &self,
        stmt: &Statement,
        columns: &[Column],
        rows: Vec<Vec<Value>>,
    ) -> Result<Vec<Vec<Value>>, Denial> {
        let _ = (stmt, columns);
        Ok(rows)
    }

    /// Transforms values about to be written. Must return one value per input, in order.
    /// Default: the values unchanged.
    fn on_write_values(
        &self,
        stmt: &Statement,
        values: Vec<BoundValue>,
    ) -> Result<Vec<Value>, Denial> {
        let _ = stmt;
        Ok(values.into_iter().map(|v| v.value).collect())
    }

    /// Turns a finished statement into an audit record for the host to persist, or nothing.
    /// Default: nothing.
    fn on_audit(&self, event: AuditEvent) -> Option<AuditRecord> {
        let _ = event;
        None
    }
}

/// Registers a [`Plugin`] type as the component's `policy` export. Use it once per crate, at
/// the top level:
///
/// ```
/// # use tidegate_plugin_sdk::{Hooks, Plugin, PluginInfo};
/// struct Nothing;
/// impl Plugin for Nothing {
///     fn init() -> Result<Self, String> { Ok(Nothing) }
///     fn info(&self) -> PluginInfo { PluginInfo::new("nothing", "0.1.0", Hooks::empty()) }
/// }
/// tidegate_plugin_sdk::export_plugin!(Nothing);
/// # fn main() {}
/// ```
///
/// With the SDK's default `runtime` feature, on wasm32 (outside `cfg(test)`) it also installs
/// the panic handler a `#![no_std]` plugin needs: a panic logs its message at error level
/// through the host (`plugin panicked at src/lib.rs:10:5: …`), then traps. A plugin that links
/// `std` must turn the feature off (`default-features = false`), or the two panic handlers
/// clash.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            type __TidegatePluginAdapter = $crate::__private::Adapter<$plugin>;
            $crate::bindings::__export_raw!(
                __TidegatePluginAdapter with_types_in $crate::bindings
            );
        };
        $crate::__runtime!();
    };
}

#[cfg(feature = "runtime")]
#[doc(hidden)]
#[macro_export]
macro_rules! __runtime {
    () => {
        // std, which a test build links, has a panic handler of its own.
        #[cfg(all(target_arch = "wasm32", not(test)))]
        const _: () = {
            #[panic_handler]
            fn panic(info: &::core::panic::PanicInfo<'_>) -> ! {
                $crate::__private::panic(info)
            }
        };
    };
}

#[cfg(not(feature = "runtime"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __runtime {
    () => {};
}

#[doc(hidden)]
pub mod __private {
    //! The glue between [`Plugin`] and the generated `Guest` trait, and the no_std runtime.

    use super::{AuditEvent, AuditRecord, BoundValue, Column, Decision, Denial, Plugin};
    use super::{PluginInfo, Statement, Value};
    use crate::bindings::exports::tidegate::policy::policy::Guest;
    use alloc::boxed::Box;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::any::Any;
    use core::cell::RefCell;
    use core::marker::PhantomData;

    /// The panic handler `export_plugin!` installs on wasm32: logs, then traps.
    #[cfg(target_arch = "wasm32")]
    pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        use core::sync::atomic::{AtomicBool, Ordering};
        static PANICKED: AtomicBool = AtomicBool::new(false);
        // A panic while logging a panic (say, out of memory) only traps.
        if !PANICKED.swap(true, Ordering::Relaxed) {
            let message = alloc::format!("plugin {info}");
            crate::host::log(crate::LogLevel::Error, &message);
        }
        core::arch::wasm32::unreachable()
    }

    type Instance = RefCell<Option<Box<dyn Any>>>;

    /// The plugin `init` built, in a component instance (single-threaded: wasm32 has no
    /// threads here).
    #[cfg(target_arch = "wasm32")]
    fn instance<R>(f: impl FnOnce(&Instance) -> R) -> R {
        struct Slot(Instance);
        // SAFETY: a wasm32 component instance runs on one thread; nothing else can see it.
        #[allow(unsafe_code)]
        unsafe impl Sync for Slot {}
        static INSTANCE: Slot = Slot(RefCell::new(None));
        f(&INSTANCE.0)
    }

    /// The plugin `init` built, per thread natively (unit tests run on many threads).
    #[cfg(not(target_arch = "wasm32"))]
    fn instance<R>(f: impl FnOnce(&Instance) -> R) -> R {
        std::thread_local! {
            static INSTANCE: Instance = const { RefCell::new(None) };
        }
        INSTANCE.with(f)
    }

    /// Runs `f` on the instance's plugin, building it with `P::init` first if this instance
    /// has none: a host may instantiate a component more than once and call `init` on only
    /// one of the instances. If that `init` fails, the hook traps.
    fn with<P: Plugin, R>(hook: &str, f: impl FnOnce(&P) -> R) -> R {
        let ready = instance(|cell| cell.borrow().as_ref().is_some_and(|b| b.is::<P>()));
        if !ready {
            match P::init() {
                Ok(plugin) => instance(|cell| *cell.borrow_mut() = Some(Box::new(plugin))),
                Err(e) => panic!("{hook}: init failed: {e}"),
            }
        }
        instance(|cell| {
            let guard = cell.borrow();
            match guard.as_ref().and_then(|b| b.downcast_ref::<P>()) {
                Some(plugin) => f(plugin),
                None => panic!("{hook}: no plugin instance"),
            }
        })
    }

    /// Implements the generated `Guest` trait for a [`Plugin`].
    pub struct Adapter<P>(PhantomData<P>);

    impl<P: Plugin> Guest for Adapter<P> {
        fn init() -> Result<PluginInfo, String> {
            instance(|cell| *cell.borrow_mut() = None);
            let plugin = P::init()?;
            let info = plugin.info();
            instance(|cell| *cell.borrow_mut() = Some(Box::new(plugin)));
            Ok(info)
        }

        fn on_statement(stmt: Statement) -> Decision {
            with::<P, _>("on-statement", |p| p.on_statement(&stmt))
        }

        fn on_rows(
            stmt: Statement,
            columns: Vec<Column>,
            rows: Vec<Vec<Value>>,
        ) -> Result<Vec<Vec<Value>>, Denial> {
            with::<P, _>("on-rows", |p| p.on_rows(&stmt, &columns, rows))
        }

        fn on_write_values(stmt: Statement, values: Vec<BoundValue>) -> Result<Vec<Value>, Denial> {
            with::<P, _>("on-write-values", |p| p.on_write_values(&stmt, values))
        }

        fn on_audit(event: AuditEvent) -> Option<AuditRecord> {
            with::<P, _>("on-audit", |p| p.on_audit(event))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::{testing, Hooks, StatementKind};
        use alloc::borrow::ToOwned;
        use alloc::vec;

        struct Counter {
            name: String,
        }

        impl Plugin for Counter {
            fn init() -> Result<Self, String> {
                let cfg: serde_json::Value = crate::config()?;
                Ok(Counter {
                    name: cfg["name"].as_str().unwrap_or("counter").to_owned(),
                })
            }
            fn info(&self) -> PluginInfo {
                PluginInfo::new(&self.name, "1", Hooks::STATEMENT | Hooks::AUDIT)
            }
            fn on_statement(&self, stmt: &Statement) -> Decision {
                if stmt.sql.contains("nope") {
                    Decision::Deny(Denial::new("42501", "nope"))
                } else {
                    Decision::Allow
                }
            }
        }

        struct Failing;
        impl Plugin for Failing {
            fn init() -> Result<Self, String> {
                Err("bad config".into())
            }
            fn info(&self) -> PluginInfo {
                PluginInfo::new("failing", "1", Hooks::empty())
            }
        }

        fn stmt(sql: &str) -> Statement {
            testing::statement(testing::principal("u", &[]), sql, StatementKind::Read, &[])
        }

        #[test]
        fn adapter_inits_then_dispatches_and_defaults_are_no_opinion() {
            let info = Adapter::<Counter>::init().unwrap();
            assert_eq!(info.name, "counter");
            assert_eq!(info.hooks, Hooks::STATEMENT | Hooks::AUDIT);
            assert!(!info.deterministic);
            assert_eq!(
                Adapter::<Counter>::on_statement(stmt("select 1")),
                Decision::Allow
            );
            assert!(matches!(
                Adapter::<Counter>::on_statement(stmt("select nope")),
                Decision::Deny(d) if d.sqlstate == "42501"
            ));
            let rows = vec![vec![Some(b"1".to_vec()), None]];
            assert_eq!(
                Adapter::<Counter>::on_rows(stmt("x"), vec![], rows.clone()),
                Ok(rows)
            );
            let col = Column::new(None, "c", "text");
            let values = vec![
                BoundValue {
                    column: col.clone(),
                    value: Some(b"a".to_vec()),
                },
                BoundValue {
                    column: col,
                    value: None,
                },
            ];
            assert_eq!(
                Adapter::<Counter>::on_write_values(stmt("x"), values),
                Ok(vec![Some(b"a".to_vec()), None])
            );
            let event = testing::audit_event(testing::principal("u", &[]), StatementKind::Read);
            assert_eq!(Adapter::<Counter>::on_audit(event), None);
        }

        #[test]
        fn a_failed_init_leaves_no_instance_and_hooks_trap() {
            assert_eq!(Adapter::<Failing>::init(), Err("bad config".to_owned()));
            let caught = std::panic::catch_unwind(|| Adapter::<Failing>::on_statement(stmt("x")));
            let message = caught.unwrap_err();
            let message = message.downcast_ref::<String>().unwrap();
            assert_eq!(message, "on-statement: init failed: bad config");
        }

        #[test]
        fn a_hook_on_an_instance_without_init_inits_it() {
            // Each test runs on its own thread, so this "instance" has never been initialised.
            assert!(matches!(
                Adapter::<Counter>::on_statement(stmt("select nope")),
                Decision::Deny(_)
            ));
            assert_eq!(
                Adapter::<Counter>::on_statement(stmt("select 1")),
                Decision::Allow
            );
        }
    }
}
