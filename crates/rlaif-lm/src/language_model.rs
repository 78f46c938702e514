//! [`LanguageModel`]: the decoder with its tokenizer and chat template, loaded from a
//! Hugging Face directory or a GGUF file, implementing [`Generator`] and [`ChoiceScorer`].

use crate::gguf::GgufFile;
use crate::hf::{read_optional_json, read_weights, write_safetensors};
use crate::model::Llama;
use crate::template::ChatTemplate;
use crate::tokenizer::TextTokenizer;
use crate::weights::{
    model_from_weights, quantized_from_gguf, weights_from_gguf, weights_from_model,
};
use crate::{LlamaConfig, LmError, generate, resolve, score};
use burn::prelude::*;
use rlaif_core::fs::write_atomic;
use rlaif_core::{ChoiceScorer, Completion, Generator, Prompt, SamplingParams};
use std::path::Path;

/// A causal language model ready to generate and score text.
#[derive(Debug)]
pub struct LanguageModel {
    /// The Burn module (train it, clone it, move it).
    pub model: Llama,
    /// Its configuration.
    pub config: LlamaConfig,
    /// Text ↔ token ids.
    pub tokenizer: TextTokenizer,
    /// The chat template, if the checkpoint has one.
    pub chat_template: Option<ChatTemplate>,
}

impl LanguageModel {
    /// Loads a Hugging Face model directory or a GGUF file onto `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, LmError> {
        let path = path.as_ref();
        if path.is_dir() {
            Self::load_hf_dir(path, device)
        } else {
            Self::load_gguf(path, device)
        }
    }

    /// Loads the default model (SmolLM2-135M-Instruct), fetching it on first use
    /// (see [`resolve`]).
    pub fn load_default(device: &Device) -> Result<Self, LmError> {
        Self::load(resolve::default_model()?, device)
    }

    /// Loads a GGUF file: config, weights (dequantised to f32), tokenizer and chat
    /// template all come from the file.
    pub fn load_gguf(path: &Path, device: &Device) -> Result<Self, LmError> {
        Self::from_gguf(&GgufFile::open(path)?, device)
    }

    /// [`LanguageModel::load_gguf`] on a parsed file.
    pub(crate) fn from_gguf(g: &GgufFile, device: &Device) -> Result<Self, LmError> {
        let config = LlamaConfig::from_gguf(g)?;
        let tokenizer = TextTokenizer::from_gguf(g)?;
        let weights = weights_from_gguf(g, &config)?;
        let model = model_from_weights(&config, weights, g.path(), device)?;
        let chat_template = match g.meta("tokenizer.chat_template").and_then(|v| v.as_str()) {
            Some(src) => Some(template_for(src, &tokenizer)?),
            None => None,
        };
        Ok(Self {
            model,
            config,
            tokenizer,
            chat_template,
        })
    }

    /// Loads a model for inference only (a reference model, a labeller, a judge, a chat): its
    /// weights frozen ([`Module::no_grad`]), and, from a GGUF file, its quantised weights
    /// (Q8_0, Q4_0, Q4_1) also kept as the file's blocks, which decoding products of at most
    /// eight rows read instead of the f32 weights on the flex backend
    /// ([`Llama::attach_quantized`](crate::Llama::attach_quantized)): a quarter to a sixth of
    /// the bytes per step. The blocks hold exactly the f32 model's values; the sums run in
    /// another order, so logits differ from [`LanguageModel::load`]'s by rounding (a few
    /// 1e-6 relative). A Hugging Face directory loads as with [`LanguageModel::load`], frozen.
    ///
    /// Do not train the model this returns (its weights do not require gradients, and blocks
    /// kept for decoding would not follow the weights): load it with
    /// [`LanguageModel::load`] for that.
    pub fn load_for_inference(path: impl AsRef<Path>, device: &Device) -> Result<Self, LmError> {
        let path = path.as_ref();
        if path.is_dir() {
            let mut lm = Self::load_hf_dir(path, device)?;
            lm.model = lm.model.no_grad();
            return Ok(lm);
        }
        let g = GgufFile::open(path)?;
        let mut lm = Self::from_gguf(&g, device)?;
        lm.model = lm.model.no_grad();
        let blocks = quantized_from_gguf(&g, &lm.config)?;
        let kept = lm.model.attach_quantized(&blocks);
        tracing::debug!(
            "{}: {kept} weights kept as ggml blocks for decoding",
            path.display()
        );
        Ok(lm)
    }

    /// Loads a Hugging Face model directory: `config.json`, `tokenizer.json`, the weights
    /// (`model.safetensors` or the shards of `model.safetensors.index.json`), and the chat
    /// template from `tokenizer_config.json` (no template if that file does not exist; an
    /// error if it exists but cannot be read or parsed).
    pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<Self, LmError> {
        let config = LlamaConfig::from_json_file(&dir.join("config.json"))?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let (weights, source) = read_weights(dir)?;
        let model = model_from_weights(&config, weights, &source, device)?;
        let tc = read_optional_json(&dir.join("tokenizer_config.json"))?;
        let chat_template = match tc
            .as_ref()
            .and_then(|json| json.get("chat_template"))
            .and_then(|v| v.as_str())
        {
            Some(src) => Some(template_for(src, &tokenizer)?),
            None => None,
        };
        Ok(Self {
            model,
            config,
            tokenizer,
            chat_template,
        })
    }

    /// Wraps a model built in code (e.g. a tiny random one for tests).
    pub fn from_parts(
        model: Llama,
        config: LlamaConfig,
        tokenizer: TextTokenizer,
        chat_template: Option<ChatTemplate>,
    ) -> Self {
        Self {
            model,
            config,
            tokenizer,
            chat_template,
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.model.device()
    }

    /// The text the model continues for `prompt`: a chat rendered through the template with
    /// the generation prompt, or raw text as is.
    pub fn render(&self, prompt: &Prompt) -> Result<String, LmError> {
        match prompt {
            Prompt::Text(t) => Ok(t.clone()),
            Prompt::Chat(c) => self
                .chat_template
                .as_ref()
                .ok_or_else(|| {
                    LmError::Template(
                        "this model has no chat template; use Prompt::Text with your own format"
                            .into(),
                    )
                })?
                .render(&c.messages, true),
        }
    }

    /// Token ids of the rendered prompt.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, LmError> {
        self.tokenizer.encode(&self.render(prompt)?)
    }

    /// Generates one completion per prompt.
    pub fn generate(
        &self,
        prompts: &[Prompt],
        params: &SamplingParams,
    ) -> Result<Vec<Completion>, LmError> {
        let ids = prompts
            .iter()
            .map(|p| self.encode_prompt(p))
            .collect::<Result<Vec<_>, _>>()?;
        generate::generate(&self.model, &self.tokenizer, &ids, params)
    }

    /// Log-probabilities of each token of each sequence given the tokens before it.
    pub fn sequence_logprobs(&self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, LmError> {
        score::sequence_logprobs(&self.model, seqs)
    }

    /// Writes a Hugging Face model directory: `config.json`, `model.safetensors` (f32),
    /// `tokenizer.json`, `tokenizer_config.json` (with the chat template),
    /// `generation_config.json`. Each file is written atomically.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<(), LmError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| LmError::io(dir, e))?;
        let json = |v: &serde_json::Value| {
            // A JSON value always serialises; an error here would name the directory.
            serde_json::to_vec_pretty(v).map_err(|e| LmError::Json {
                path: dir.to_path_buf(),
                msg: e.to_string(),
            })
        };
        let mut cfg = self.config.clone();
        cfg.bos_token_id = self.tokenizer.bos_id.or(cfg.bos_token_id);
        if let Some(eos) = self.tokenizer.eos_id {
            cfg.eos_token_id = vec![eos];
        }
        write_atomic(&dir.join("config.json"), &json(&cfg.to_hf_json())?)?;
        write_safetensors(
            &weights_from_model(&self.model)?,
            &dir.join("model.safetensors"),
        )?;
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        let name = |id: Option<u32>| id.and_then(|i| self.tokenizer.id_to_token(i));
        let mut tc = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": self.config.max_position_embeddings,
            "clean_up_tokenization_spaces": false,
            "bos_token": name(self.tokenizer.bos_id),
            "eos_token": name(self.tokenizer.eos_id),
            "pad_token": name(self.tokenizer.pad_id),
        });
        if let Some(t) = &self.chat_template {
            tc["chat_template"] = t.source().into();
        }
        write_atomic(&dir.join("tokenizer_config.json"), &json(&tc)?)?;
        let generation = serde_json::json!({
            "bos_token_id": self.tokenizer.bos_id,
            "eos_token_id": self.tokenizer.stop_ids,
            "pad_token_id": self.tokenizer.pad_id,
        });
        write_atomic(&dir.join("generation_config.json"), &json(&generation)?)?;
        Ok(())
    }
}

fn template_for(src: &str, tok: &TextTokenizer) -> Result<ChatTemplate, LmError> {
    let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
    ChatTemplate::new(src, &name(tok.bos_id), &name(tok.eos_id))
}

impl Generator for LanguageModel {
    fn generate(
        &self,
        prompts: &[Prompt],
        params: &SamplingParams,
    ) -> rlaif_core::Result<Vec<Completion>> {
        Ok(LanguageModel::generate(self, prompts, params)?)
    }
}

impl ChoiceScorer for LanguageModel {
    fn choice_logprobs(&self, prompt: &Prompt, choices: &[String]) -> rlaif_core::Result<Vec<f64>> {
        let p = self.encode_prompt(prompt)?;
        let c = choices
            .iter()
            .map(|c| self.tokenizer.encode(c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(score::choice_logprobs(&self.model, &p, &c)?)
    }
}
