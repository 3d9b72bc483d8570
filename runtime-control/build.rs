//! Generates the runtime-control messages and ttrpc bindings from proto/.

fn main() {
    println!("cargo:rerun-if-changed=proto/control.proto");
    ttrpc_codegen::Codegen::new()
        .out_dir(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .input("proto/control.proto")
        .include("proto")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            gen_mod: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ttrpc_codegen::ProtobufCustomize::default().gen_mod_rs(true))
        .run()
        .expect("generating runtime-control code");
    strip_inner_attributes();
}

/// `include!` cannot take files with inner attributes or inner doc comments:
/// drop them (the including module carries the allows instead).
fn strip_inner_attributes() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in ["control.rs", "control_ttrpc.rs"] {
        let path = out.join(name);
        let text = std::fs::read_to_string(&path).expect("reading generated code");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#!") && !l.starts_with("//!"))
            .collect();
        std::fs::write(&path, kept.join("\n")).expect("writing generated code");
    }
}
