//! The model's own chat template (Jinja, from `chat_template.jinja` or `tokenizer_config.json`),
//! rendered with `minijinja` (+ Python string methods) the way transformers' `apply_chat_template`
//! does: `messages`, `add_generation_prompt`, `bos_token` / `eos_token` and the other special tokens
//! as variables.

use minijinja::{Environment, Value, context};

/// One conversation turn handed to the template.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: Vec<Content>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Content {
    Image,
    Text { text: String },
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos", &self.bos)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; errors carry minijinja's line and reason.
    pub fn new(source: String, bos: String, eos: String) -> Result<ChatTemplate, String> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source)
            .map_err(|e| describe(&e))?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// The prompt text for `messages`, ending with the assistant turn's opening.
    pub fn render(&self, messages: &[Message]) -> Result<String, String> {
        let t = self.env.get_template("chat").map_err(|e| describe(&e))?;
        t.render(context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => true,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| describe(&e))
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// The published LFM2-VL chat template (the one `LiquidAI/LFM2-VL-*` ship as chat_template.jinja).
#[cfg(test)]
pub(crate) const LFM2_VL_TEMPLATE: &str = "{{bos_token}}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<image>' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_lfm2_vl_template() {
        let t = ChatTemplate::new(
            LFM2_VL_TEMPLATE.into(),
            "<|startoftext|>".into(),
            "<|im_end|>".into(),
        )
        .unwrap();
        let text = t
            .render(&[
                Message {
                    role: "system",
                    content: vec![Content::Text {
                        text: "You watch a driver.".into(),
                    }],
                },
                Message {
                    role: "user",
                    content: vec![
                        Content::Image,
                        Content::Text {
                            text: "Eyes closed?".into(),
                        },
                    ],
                },
            ])
            .unwrap();
        assert_eq!(
            text,
            "<|startoftext|><|im_start|>system\nYou watch a driver.<|im_end|>\n<|im_start|>user\n<image>Eyes closed?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0]['content'][0]['text'].strip().upper() }}".into(),
            String::new(),
            String::new(),
        )
        .unwrap();
        let user = Message {
            role: "user",
            content: vec![Content::Text {
                text: " hi ".into(),
            }],
        };
        assert_eq!(t.render(std::slice::from_ref(&user)).unwrap(), "HI");
        let sys = Message {
            role: "system",
            ..user
        };
        assert!(t.render(&[sys]).unwrap_err().contains("first must be user"));
        let bad = ChatTemplate::new("{% for %}".into(), String::new(), String::new()).unwrap_err();
        assert!(
            bad.contains("syntax error") && bad.contains("chat:1"),
            "{bad}"
        );
    }
}
