//! What a booting machine is answered: iPXE scripts and pixiecore API documents, rendered from
//! already-validated parts (the MAC is normalised, the host sanitised, the command line and key
//! URL checked at configuration time). A refusal is rendered without any token by construction:
//! its renderer takes none.

use secrecy::{ExposeSecret, SecretString};

/// The parts of a successful boot.
pub struct Boot<'a> {
    /// `http://HOST` of the netboot listener as the machine reached it.
    pub base: &'a str,
    pub mac: &'a str,
    pub cmdline: &'a str,
    pub key_url: &'a str,
    pub initrds: usize,
    pub token: &'a SecretString,
    pub retry_secs: u64,
}

/// The `Host` header if it is a plain host[:port] (anything else could inject into a script).
pub fn safe_host(host: Option<&str>) -> Option<&str> {
    let h = host?;
    let ok = !h.is_empty()
        && h.len() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    ok.then_some(h)
}

/// The full kernel command line for this boot.
pub fn full_cmdline(b: &Boot<'_>) -> SecretString {
    let mut words: Vec<&str> = b.cmdline.split_whitespace().collect();
    let key = format!("tailjoin.key_url={}", b.key_url);
    let tok = format!("tailjoin.boot_token={}", b.token.expose_secret());
    words.push(&key);
    words.push(&tok);
    SecretString::from(words.join(" "))
}

/// First stage: ask again with this machine's MAC, so a DHCP boot file URL needs no
/// per-machine part.
pub fn chain_script(base: &str) -> String {
    format!("#!ipxe\nchain {base}/v1/boot.ipxe?mac=${{net0/mac}}\n")
}

fn retry_lines(base: &str, mac_param: &str, attempt: u32, delay: u64) -> String {
    format!(
        "echo tailjoin: asking again in {delay} s (attempt {next})\nsleep {delay}\nchain {base}/v1/boot.ipxe?mac={mac_param}&attempt={next}\n",
        next = attempt.saturating_add(1)
    )
}

/// The boot: load the kernel (with the token on its command line) and the initrds, boot. If a
/// download or the boot fails, say so and start over after `retry_secs`.
pub fn boot_script(b: &Boot<'_>) -> SecretString {
    let mut s = format!("#!ipxe\necho tailjoin: booting {}\n", b.mac);
    s.push_str(&format!(
        "kernel {}/v1/files/kernel {} || goto failed\n",
        b.base,
        full_cmdline(b).expose_secret()
    ));
    for i in 0..b.initrds {
        s.push_str(&format!(
            "initrd {}/v1/files/initrd/{i} || goto failed\n",
            b.base
        ));
    }
    s.push_str("boot || goto failed\n:failed\necho tailjoin: loading the boot files failed\n");
    s.push_str(&retry_lines(b.base, b.mac, 0, b.retry_secs));
    SecretString::from(s)
}

/// A refusal: the reason on the console, then ask again after `delay` seconds.
pub fn refusal_script(
    base: &str,
    console_line: &str,
    mac_param: &str,
    attempt: u32,
    delay: u64,
) -> String {
    format!(
        "#!ipxe\necho {console_line}\n{}",
        retry_lines(base, mac_param, attempt, delay)
    )
}

/// pixiecore's API answer: kernel and initrd as paths on this server (pixiecore resolves them
/// against the API URL and proxies them), the command line with the token, a console message.
pub fn pixiecore_doc(b: &Boot<'_>) -> SecretString {
    let initrd: Vec<String> = (0..b.initrds)
        .map(|i| format!("/v1/files/initrd/{i}"))
        .collect();
    SecretString::from(
        serde_json::json!({
            "kernel": "/v1/files/kernel",
            "initrd": initrd,
            "cmdline": full_cmdline(b).expose_secret(),
            "message": format!("tailjoin: booting {}", b.mac),
        })
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(token: &SecretString) -> Boot<'_> {
        Boot {
            base: "http://10.0.2.2:8081",
            mac: "52:54:00:12:34:56",
            cmdline: "console=ttyS0  quiet",
            key_url: "https://10.0.2.2:8443/v1/key",
            initrds: 2,
            token,
            retry_secs: 30,
        }
    }

    #[test]
    fn the_boot_script_loads_kernel_initrds_and_carries_the_token() {
        let t = SecretString::from("ab".repeat(32));
        let s = boot_script(&boot(&t)).expose_secret().to_owned();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "#!ipxe");
        assert_eq!(lines[1], "echo tailjoin: booting 52:54:00:12:34:56");
        assert_eq!(
            lines[2],
            format!(
                "kernel http://10.0.2.2:8081/v1/files/kernel console=ttyS0 quiet tailjoin.key_url=https://10.0.2.2:8443/v1/key tailjoin.boot_token={} || goto failed",
                "ab".repeat(32)
            )
        );
        assert_eq!(
            lines[3],
            "initrd http://10.0.2.2:8081/v1/files/initrd/0 || goto failed"
        );
        assert_eq!(
            lines[4],
            "initrd http://10.0.2.2:8081/v1/files/initrd/1 || goto failed"
        );
        assert_eq!(lines[5], "boot || goto failed");
        assert!(s.ends_with(
            "chain http://10.0.2.2:8081/v1/boot.ipxe?mac=52:54:00:12:34:56&attempt=1\n"
        ));
    }

    #[test]
    fn a_refusal_says_why_sleeps_and_chains_with_the_next_attempt() {
        let s = refusal_script("http://h:1", "tailjoin: no", "52:54:00:12:34:56", 2, 120);
        assert_eq!(
            s,
            "#!ipxe\necho tailjoin: no\necho tailjoin: asking again in 120 s (attempt 3)\nsleep 120\nchain http://h:1/v1/boot.ipxe?mac=52:54:00:12:34:56&attempt=3\n"
        );
        assert!(!s.contains("boot_token"));
        assert_eq!(
            chain_script("http://h:1"),
            "#!ipxe\nchain http://h:1/v1/boot.ipxe?mac=${net0/mac}\n"
        );
    }

    #[test]
    fn the_pixiecore_document_has_the_documented_fields() {
        let t = SecretString::from("cd".repeat(32));
        let v: serde_json::Value =
            serde_json::from_str(pixiecore_doc(&boot(&t)).expose_secret()).unwrap();
        assert_eq!(v["kernel"], "/v1/files/kernel");
        assert_eq!(
            v["initrd"],
            serde_json::json!(["/v1/files/initrd/0", "/v1/files/initrd/1"])
        );
        assert!(
            v["cmdline"]
                .as_str()
                .unwrap()
                .ends_with(&format!("tailjoin.boot_token={}", "cd".repeat(32)))
        );
    }

    #[test]
    fn only_plain_hosts_are_used() {
        assert_eq!(safe_host(Some("10.0.2.2:8081")), Some("10.0.2.2:8081"));
        assert_eq!(safe_host(Some("[::1]:8081")), Some("[::1]:8081"));
        assert_eq!(safe_host(Some("evil\nchain x")), None);
        assert_eq!(safe_host(Some("a/b")), None);
        assert_eq!(safe_host(None), None);
    }
}
