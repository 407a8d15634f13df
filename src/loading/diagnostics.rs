//! Load-time errors located in a BUILD or .star file (file, line, column, the offending text), and
//! their rendering in the rustc/miette style. Every user error of loading ends up as a [`LoadError`].

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, SourceCode};

/// Where in a source file something is: the file's display name, its text, and a byte range.
#[derive(Clone)]
pub struct Site {
    pub file: String,
    pub source: Arc<String>,
    pub start: usize,
    pub len: usize,
}

impl Site {
    /// 1-based line and column of the start.
    pub fn line_col(&self) -> (usize, usize) {
        let before = &self.source[..self.start.min(self.source.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }

    pub fn from_file_span(fs: &starlark::codemap::FileSpan) -> Site {
        let begin = fs.span.begin().get() as usize;
        let end = fs.span.end().get() as usize;
        Site {
            file: fs.file.filename().to_string(),
            source: Arc::new(fs.file.source().to_string()),
            start: begin,
            len: end.saturating_sub(begin),
        }
    }
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (l, c) = self.line_col();
        write!(f, "{}:{}:{}", self.file, l, c)
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A user error found while loading BUILD files: what is wrong, where, and how to fix it.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub message: String,
    pub site: Option<Site>,
    /// Short text under the caret.
    pub label: Option<String>,
    pub help: Option<String>,
}

impl LoadError {
    pub fn new(message: impl Into<String>) -> LoadError {
        LoadError { message: message.into(), site: None, label: None, help: None }
    }
    pub fn at(mut self, site: Option<Site>) -> LoadError {
        if self.site.is_none() {
            self.site = site;
        }
        self
    }
    pub fn label(mut self, l: impl Into<String>) -> LoadError {
        self.label = Some(l.into());
        self
    }
    pub fn help(mut self, h: impl Into<String>) -> LoadError {
        self.help = Some(h.into());
        self
    }

    /// Converts a starlark error (syntax error, failed `fail()`, type error) keeping its location.
    pub fn from_starlark(e: &starlark::Error) -> LoadError {
        let site = e.span().map(Site::from_file_span);
        let mut msg = format!("{}", e.kind());
        // starlark prefixes some kinds; keep the first line as the headline, the rest as help.
        msg = msg.trim().to_string();
        let (head, rest) = match msg.split_once('\n') {
            Some((h, r)) => (h.to_string(), Some(r.trim().to_string())),
            None => (msg.clone(), None),
        };
        let mut le = LoadError::new(head).at(site);
        if let Some(r) = rest.filter(|r| !r.is_empty()) {
            le = le.help(r);
        }
        le
    }

    /// Renders the error like rustc: headline, `╭─[file:line:col]`, the source line and a caret.
    /// No colours, so output is stable in snapshots and logs.
    pub fn render(&self) -> String {
        self.render_styled(false)
    }

    /// [`render`](Self::render), in colour when `color` (a terminal, `--color always`).
    pub fn render_styled(&self, color: bool) -> String {
        let mut out = String::new();
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        if handler.render_report(&mut out, self).is_err() {
            out = format!("error: {}", self.message);
        }
        out
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}

impl Diagnostic for LoadError {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.site.as_ref().map(|s| s as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let s = self.site.as_ref()?;
        let room = s.source.len().saturating_sub(s.start);
        let span = LabeledSpan::new(self.label.clone(), s.start.min(s.source.len()), s.len.min(room));
        Some(Box::new(std::iter::once(span)))
    }
}

/// The site's source, named after its file so miette prints `╭─[file:line:col]`.
impl SourceCode for Site {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let inner = self.source.as_str().read_span(span, context_lines_before, context_lines_after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.file.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}
