//! Chat templates: the Jinja `chat_template` of `tokenizer_config.json` or GGUF metadata
//! (`tokenizer.chat_template`), rendered with minijinja the way transformers renders it
//! (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`).

use crate::LmError;
use minijinja::{Environment, ErrorKind, Value, context};
use rlaif_core::Message;

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(msg: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` / `eos_token` are exposed to the template.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, LmError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| LmError::Template(format!("cannot parse the chat template: {e}")))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, LmError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| LmError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| LmError::Template(format!("rendering failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlaif_core::{Conversation, Role};

    /// ChatML as SmolLM2 writes it (default system prompt when none is given).
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").unwrap();
        let c = Conversation::new().user("Hello");
        let s = t.render(&c.messages, true).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
        );
        let c = Conversation::new()
            .system("Be brief.")
            .user("Hi")
            .assistant("Hello!");
        let s = t.render(&c.messages, false).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        );
    }

    #[test]
    fn python_methods_blocks_and_exceptions() {
        let src = "{% for m in messages %}\n  {% if m.role == 'assistant' and not m.content.strip().startswith('x') %}{{ raise_exception('bad ' + m.role) }}{% endif %}\n[{{ m.content.strip() | upper }}]\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let ok = vec![Message::new(Role::User, "  hi ")];
        assert_eq!(t.render(&ok, false).unwrap(), "[HI]\n");
        let bad = vec![Message::new(Role::Assistant, "y")];
        let e = t.render(&bad, false).unwrap_err().to_string();
        assert!(e.contains("bad assistant"), "{e}");
        let e = ChatTemplate::new("{% for %}", "", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot parse"), "{e}");
    }
}
