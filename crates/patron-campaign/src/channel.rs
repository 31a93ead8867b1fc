//! The contact channels a campaign can use: the three channels every customer
//! states consent on.

/// A campaign's contact channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// E-mail.
    Email,
    /// Text message.
    Sms,
    /// Push notification.
    Push,
}

impl Channel {
    /// Every channel, in code order.
    pub const ALL: [Self; 3] = [Self::Email, Self::Sms, Self::Push];

    /// The channel's name, as in consent events and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Push => "push",
        }
    }

    /// The channel named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The one-byte code of the log encoding.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The channel of a log code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
            assert_eq!(Channel::from_code(c.code()), Some(c));
        }
        assert_eq!(Channel::parse("whatsapp"), None);
        assert_eq!(Channel::from_code(3), None);
    }
}
