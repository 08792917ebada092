//! Compiles `gatehouse/v1/*.proto` with protox (pure Rust, no system protoc):
//! messages with prost, gRPC services (clients and servers) with tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "gatehouse/v1/hostd.proto",
        "gatehouse/v1/admin.proto",
        "gatehouse/v1/control.proto",
        "gatehouse/v1/events.proto",
        "gatehouse/v1/logs.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let mut config = prost_build::Config::new();
    config.btree_map(["."]).bytes(["."]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
