//! Config loading: any text either parses into a config whose route table compiles, or fails with
//! an error that names the file (`fuzz.toml:LINE: ...`). Never a panic.

#![no_main]

use authgate::config::Config;
use authgate::config::parse_pattern;
use authgate::routes::RouteTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    // `jwks_file` is read whole (the config is trusted input): keep the fuzzer away from device
    // and kernel files, which could block or never end. Relative paths resolve against the working
    // directory, as `Config::parse` does for everyone.
    if ["/dev", "/proc", "/sys", "/run", "/tmp"]
        .iter()
        .any(|dir| source.contains(dir))
    {
        return;
    }
    match Config::parse(source, "fuzz.toml", &|_| Some("x".repeat(32))) {
        Ok(config) => {
            assert!(
                RouteTable::compile(&config.routes).is_ok(),
                "a parsed config's routes must compile"
            );
            for route in &config.routes {
                assert_eq!(
                    parse_pattern(&route.path).as_ref(),
                    Ok(&route.params),
                    "route {:?}",
                    route.path
                );
                if let Some(owner) = &route.owner {
                    assert!(
                        route.params.contains(owner),
                        "owner {owner:?} is no parameter"
                    );
                }
            }
        }
        Err(err) => {
            let message = err.to_string();
            assert!(
                message.contains("fuzz.toml:"),
                "config error without its location: {message:?}"
            );
        }
    }
});
