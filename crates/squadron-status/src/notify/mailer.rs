//! Sending email over SMTP with `lettre`, with SQUAD's bulk-mail headers
//! and a Message-ID chosen by the caller (stable across attempts).

use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::render::Rendered;
use super::report::Site;
use crate::StatusError;

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom email is sent.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// The SMTP server (SQUAD's `SQUAD_EMAIL_HOST`).
    pub smtp_host: String,
    /// Its port (`SQUAD_EMAIL_PORT`).
    pub smtp_port: u16,
    /// The sender address (`SQUAD_EMAIL_FROM`).
    pub from: String,
    /// The site, for links and the sender's name.
    pub site: Site,
}

/// Sends rendered emails.
#[derive(Clone)]
pub struct Mailer {
    settings: MailSettings,
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("settings", &self.settings).finish()
    }
}

impl Mailer {
    /// A mailer for `settings`; fails on a sender that is not an address.
    pub fn new(settings: MailSettings) -> Result<Mailer, StatusError> {
        let address = settings
            .from
            .parse()
            .map_err(|e| StatusError::Mail(format!("the sender {:?} is not an email address: {e}", settings.from)))?;
        let from = Mailbox::new(Some(settings.site.name.clone()), address);
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.smtp_host)
            .port(settings.smtp_port)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Mailer { settings, from, transport })
    }

    /// The site the emails link to.
    pub fn site(&self) -> &Site {
        &self.settings.site
    }

    /// A Message-ID for `local` (unique per email, the same on every
    /// attempt to send it) in the sender's domain.
    pub fn message_id(&self, local: &str) -> String {
        format!("<{local}@{}>", self.from.email.domain())
    }

    /// Sends `email` to `recipients` (one message, every recipient in
    /// `To`, as SQUAD).
    pub async fn send(&self, email: &Rendered, recipients: &[String], message_id: &str) -> Result<(), StatusError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(email.subject.clone())
            .message_id(Some(message_id.to_string()));
        for recipient in recipients {
            let to: Mailbox =
                recipient.parse().map_err(|e| StatusError::Mail(format!("bad recipient {recipient:?}: {e}")))?;
            builder = builder.to(to);
        }
        for (name, value) in
            [("Precedence", "bulk"), ("Auto-Submitted", "auto-generated"), ("X-Auto-Response-Suppress", "All")]
        {
            let name = HeaderName::new_from_ascii_str(name);
            builder = builder.raw_header(HeaderValue::new(name, value.to_string()));
        }
        let message = match &email.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(email.text.clone(), html.clone())),
            None => builder.body(email.text.clone()),
        }
        .map_err(|e| StatusError::Mail(format!("cannot build the message: {e}")))?;
        self.transport.send(message).await.map_err(|e| StatusError::Mail(format!("SMTP: {e}")))?;
        Ok(())
    }
}

/// Whether `text` is an email address (as SMTP takes it).
pub fn is_email(text: &str) -> bool {
    text.parse::<lettre::Address>().is_ok()
}
