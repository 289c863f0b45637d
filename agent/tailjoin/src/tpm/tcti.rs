//! Where the TPM is and opening it. `TAILJOIN_TPM_TCTI` names a TCTI as tpm2-tools write it
//! (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, `mssim:…`, `tabrmd:…`); without it,
//! the kernel's resource manager `/dev/tpmrm0` when it exists. The resource manager (not
//! `/dev/tpm0`) lets the agent share the TPM and flushes what a crashed agent left loaded.

use super::TpmError;
use std::str::FromStr;
use tss_esapi::Context;
use tss_esapi::tcti_ldr::{DeviceConfig, TctiNameConf};

/// The environment variable that names the TPM's TCTI.
pub const TCTI_ENV: &str = "TAILJOIN_TPM_TCTI";

/// The kernel's TPM resource manager device.
pub const DEFAULT_DEVICE: &str = "/dev/tpmrm0";

/// This machine's TPM, if it seems to have one: [`TCTI_ENV`] when set and not empty, else
/// [`DEFAULT_DEVICE`] when it exists.
pub fn find() -> Option<String> {
    let env = std::env::var_os(TCTI_ENV).map(|v| v.to_string_lossy().into_owned());
    choose(env, std::path::Path::new(DEFAULT_DEVICE).exists())
}

/// [`find`]'s decision, given the variable's value and whether the device exists.
pub fn choose(env: Option<String>, device_exists: bool) -> Option<String> {
    match env.map(|v| v.trim().to_owned()) {
        Some(tcti) if !tcti.is_empty() => Some(tcti),
        _ if device_exists => Some(format!("device:{DEFAULT_DEVICE}")),
        _ => None,
    }
}

/// Reads a TCTI name. `device:PATH` (the kernel's TPM, what a netbooted machine has) is read
/// here; the others (`swtpm:`, `mssim:`, `tabrmd:`: simulators and daemons) only with the
/// `network-tcti` feature, because tss-esapi parses them with the regex crate, which would add
/// about 1.2 MB to every machine's binary (docs/BENCHMARKS.md §4).
fn parse(tcti: &str) -> Result<TctiNameConf, TpmError> {
    let bad = || {
        TpmError::new(format!(
            "{tcti:?} is not a TCTI: give {TCTI_ENV} as device:/dev/tpmrm0 (or, in a build with \
             the network-tcti feature, swtpm:host=HOST,port=PORT, mssim:host=HOST,port=PORT or \
             tabrmd)"
        ))
    };
    if tcti == "device" {
        return Ok(TctiNameConf::Device(DeviceConfig::default()));
    }
    if let Some(path) = tcti.strip_prefix("device:") {
        return DeviceConfig::from_str(path)
            .map(TctiNameConf::Device)
            .map_err(|_| bad());
    }
    parse_network(tcti).ok_or_else(bad)
}

#[cfg(feature = "network-tcti")]
fn parse_network(tcti: &str) -> Option<TctiNameConf> {
    TctiNameConf::from_str(tcti).ok()
}

#[cfg(not(feature = "network-tcti"))]
fn parse_network(_tcti: &str) -> Option<TctiNameConf> {
    None
}

/// Opens an ESAPI context on `tcti`.
pub(super) fn open(tcti: &str) -> Result<Context, TpmError> {
    let conf = parse(tcti)?;
    Context::new(conf).map_err(|e| {
        TpmError::new(format!(
            "cannot open the TPM ({e}): check that the device exists and that the agent may \
             read and write it (or that the TPM simulator is running)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_wins_then_the_device_then_nothing() {
        let swtpm = "swtpm:host=127.0.0.1,port=2321";
        assert_eq!(choose(Some(swtpm.into()), true).as_deref(), Some(swtpm));
        assert_eq!(choose(Some(swtpm.into()), false).as_deref(), Some(swtpm));
        assert_eq!(
            choose(Some("  ".into()), true).as_deref(),
            Some("device:/dev/tpmrm0")
        );
        assert_eq!(choose(None, true).as_deref(), Some("device:/dev/tpmrm0"));
        assert_eq!(choose(None, false), None);
        assert_eq!(choose(Some(String::new()), false), None);
    }

    #[test]
    fn an_unknown_tcti_is_refused_with_the_forms_it_may_take() {
        let e = open("carrier-pigeon:coop=3").err().unwrap().to_string();
        assert!(e.contains("carrier-pigeon") && e.contains(TCTI_ENV), "{e}");
        assert!(e.contains("device:/dev/tpmrm0"), "{e}");
    }

    #[test]
    fn device_names_are_read_without_the_network_feature() {
        assert!(matches!(
            parse("device:/dev/tpm0"),
            Ok(TctiNameConf::Device(_))
        ));
        assert!(matches!(parse("device"), Ok(TctiNameConf::Device(_))));
        assert_eq!(
            parse("swtpm:host=127.0.0.1,port=2321").is_ok(),
            cfg!(feature = "network-tcti")
        );
    }
}
