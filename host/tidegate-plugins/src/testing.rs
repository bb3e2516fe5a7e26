//! Plugins built for tests from WAT core modules against the real WIT (feature `testing`):
//! hostile behaviour — traps, loops, memory bombs, bad values — in a few lines of WAT.

const WIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../wit/tidegate-policy@0.1.0"
);

/// A component from a core module whose `on-statement` body is `body` (a function
/// `(param $stmt i32) (result i32)` returning a pointer to the decision), with `extra`
/// functions beside it. Memory layout: the init result at 1024, an `allow` decision at 1200,
/// strings at 2048, a bump allocator above 4096. Panics on invalid WAT (test input).
pub fn component(body: &str, extra: &str) -> Vec<u8> {
    build(body, extra, false)
}

/// [`component`], declaring its `on-statement` decisions deterministic.
pub fn deterministic_component(body: &str, extra: &str) -> Vec<u8> {
    build(body, extra, true)
}

fn build(body: &str, extra: &str, deterministic: bool) -> Vec<u8> {
    let deterministic = if deterministic { r"\01" } else { r"\00" };
    let wat = format!(
        r#"(module
  (import "tidegate:policy/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 2048) "evil")
  ;; result<plugin-info, string>: ok; name "evil", version "evil", hooks = statement,
  ;; deterministic as asked, columns = [].
  (data (i32.const 1024) "\00\00\00\00\00\08\00\00\04\00\00\00\00\08\00\00\04\00\00\00\01{deterministic}\00\00\00\00\00\00\00\00\00\00")
  (data (i32.const 1200) "\00\00\00\00")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (i32.add (global.get $bump) (local.get 3)) (i32.const 60000))
      (then (global.set $bump (i32.const 4096))))
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (local.get $p))
  (func (export "tidegate:policy/policy@0.1.0#init") (result i32) (i32.const 1024))
  (func (export "tidegate:policy/policy@0.1.0#on-statement") (param $stmt i32) (result i32)
    {body})
  (func (export "tidegate:policy/policy@0.1.0#on-rows") (param i32) (result i32) unreachable)
  (func (export "tidegate:policy/policy@0.1.0#on-write-values") (param i32) (result i32) unreachable)
  (func (export "tidegate:policy/policy@0.1.0#on-audit") (param i32) (result i32) unreachable)
  {extra}
)"#
    );
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(WIT).expect("WIT parses");
    let world = resolve
        .select_world(&[pkg], Some("plugin"))
        .expect("world plugin");
    let mut module = wat::parse_str(&wat).expect("valid WAT");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("module")
        .validate(true)
        .encode()
        .expect("encode")
}
