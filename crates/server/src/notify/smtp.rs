//! A small SMTP client (RFC 5321) for notification e-mails: EHLO, STARTTLS (RFC 3207, rustls
//! with the platform's trust store), AUTH PLAIN (only over TLS), one message to its
//! recipients, QUIT. Plain text, UTF-8, quoted-printable-free (8BITMIME is not assumed: the
//! body is sent as base64).

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::SmtpSettings;

/// One e-mail.
#[derive(Clone, Debug)]
pub struct Message {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    pub message_id: String,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Conn {
    io: BufReader<Box<dyn Stream>>,
}

impl Conn {
    /// Reads one (possibly multi-line) reply: its code and its lines' text.
    async fn reply(&mut self) -> anyhow::Result<(u16, Vec<String>)> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .io
                .read_line(&mut line)
                .await
                .context("reading the SMTP reply")?;
            if n == 0 {
                bail!("the SMTP server closed the connection");
            }
            if line.len() < 4 || line.len() > 4096 {
                bail!("malformed SMTP reply {line:?}");
            }
            let code: u16 = line[..3]
                .parse()
                .map_err(|_| anyhow!("malformed SMTP reply {line:?}"))?;
            let more = line.as_bytes()[3] == b'-';
            lines.push(line[4..].trim_end().to_owned());
            if !more {
                return Ok((code, lines));
            }
            if lines.len() > 100 {
                bail!("SMTP reply too long");
            }
        }
    }

    async fn command(
        &mut self,
        line: &str,
        expect: &[u16],
        what: &str,
    ) -> anyhow::Result<Vec<String>> {
        self.io
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .with_context(|| format!("sending {what}"))?;
        self.io.get_mut().flush().await?;
        let (code, text) = self.reply().await?;
        if !expect.contains(&code) {
            bail!("SMTP {what}: {code} {}", text.join(" "));
        }
        Ok(text)
    }
}

fn check_address(a: &str) -> anyhow::Result<()> {
    if a.is_empty()
        || a.len() > 254
        || !a.contains('@')
        || a.chars()
            .any(|c| c.is_control() || matches!(c, '<' | '>' | ' ' | ','))
    {
        bail!("{a:?} is not an e-mail address");
    }
    Ok(())
}

fn header_text(s: &str) -> String {
    // No header injection: one line, and non-ASCII as an RFC 2047 encoded word.
    let line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.is_ascii() {
        line
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(line.as_bytes())
        )
    }
}

/// The message as sent after DATA (CRLF line ends, base64 body, terminated).
fn render(m: &Message) -> String {
    let date = chrono::Utc::now().to_rfc2822();
    let body = base64::engine::general_purpose::STANDARD.encode(m.body.as_bytes());
    let mut text = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\nAuto-Submitted: auto-generated\r\n\r\n",
        m.from,
        m.to.join(", "),
        header_text(&m.subject),
        header_text(&m.message_id),
    );
    for chunk in body.as_bytes().chunks(76) {
        text.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        text.push_str("\r\n");
    }
    text.push_str(".\r\n");
    text
}

fn tls_config() -> anyhow::Result<rustls::ClientConfig> {
    use rustls_platform_verifier::BuilderVerifierExt;
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_platform_verifier()?
    .with_no_client_auth())
}

/// Sends `message` through the configured server.
pub async fn send(settings: &SmtpSettings, message: &Message) -> anyhow::Result<()> {
    let server = settings
        .server
        .as_deref()
        .ok_or_else(|| anyhow!("no SMTP server configured (smtp_server)"))?;
    check_address(&message.from)?;
    if message.to.is_empty() {
        bail!("no recipients");
    }
    for to in &message.to {
        check_address(to)?;
    }
    let host = server
        .rsplit_once(':')
        .map_or(server, |(h, _)| h)
        .to_owned();
    let tcp = TcpStream::connect(server)
        .await
        .with_context(|| format!("connecting to the SMTP server {server}"))?;
    let mut conn = Conn {
        io: BufReader::new(Box::new(tcp) as Box<dyn Stream>),
    };
    let (code, text) = conn.reply().await?;
    if code != 220 {
        bail!("SMTP greeting: {code} {}", text.join(" "));
    }
    let features = conn.command("EHLO espwatch", &[250], "EHLO").await?;
    let mut tls = false;
    if settings.starttls {
        if !features.iter().any(|f| f.eq_ignore_ascii_case("STARTTLS")) {
            bail!(
                "the SMTP server does not offer STARTTLS (set smtp_tls = \"none\" only for a local relay)"
            );
        }
        conn.command("STARTTLS", &[220], "STARTTLS").await?;
        if !conn.io.buffer().is_empty() {
            bail!("SMTP server sent data before the TLS handshake");
        }
        let plain = conn.io.into_inner();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| anyhow!("SMTP server name {host:?}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls_config()?))
            .connect(name, plain)
            .await
            .context("SMTP TLS handshake")?;
        conn = Conn {
            io: BufReader::new(Box::new(stream) as Box<dyn Stream>),
        };
        conn.command("EHLO espwatch", &[250], "EHLO").await?;
        tls = true;
    }
    if let Some(user) = &settings.username {
        if !tls {
            bail!("refusing to send SMTP credentials without TLS");
        }
        let token = base64::engine::general_purpose::STANDARD.encode(format!(
            "\0{user}\0{}",
            settings.password.as_deref().unwrap_or_default()
        ));
        conn.command(&format!("AUTH PLAIN {token}"), &[235], "AUTH")
            .await?;
    }
    conn.command(
        &format!("MAIL FROM:<{}>", message.from),
        &[250],
        "MAIL FROM",
    )
    .await?;
    for to in &message.to {
        conn.command(&format!("RCPT TO:<{to}>"), &[250, 251], "RCPT TO")
            .await?;
    }
    conn.command("DATA", &[354], "DATA").await?;
    let data = render(message);
    conn.io.get_mut().write_all(data.as_bytes()).await?;
    conn.io.get_mut().flush().await?;
    let (code, text) = conn.reply().await?;
    if code != 250 {
        bail!("SMTP message refused: {code} {}", text.join(" "));
    }
    // The message is accepted; a failing QUIT changes nothing.
    let _ = conn.command("QUIT", &[221], "QUIT").await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_cannot_be_injected_and_the_body_is_base64_lines() {
        let m = Message {
            from: "espwatch@example.com".into(),
            to: vec!["a@example.com".into()],
            subject: "x\r\nBcc: evil@example.com".into(),
            body: "line one\n.\nline three ".repeat(20),
            message_id: "<k@espwatch>".into(),
        };
        let text = render(&m);
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert!(text.ends_with("\r\n.\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(body.lines().all(|l| l.len() <= 76 && !l.starts_with("..")));
        assert!(check_address("a@b").is_ok());
        assert!(check_address("a@b>\r\nRCPT TO:<c@d").is_err());
        assert_eq!(header_text("Pumpe °C"), "=?UTF-8?B?UHVtcGUgwrBD?=");
    }
}
