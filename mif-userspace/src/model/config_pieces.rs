//! Parsing a long config file in pieces. TOML's parser builds a document
//! of the whole file before a single entry is read (about 2 KiB per
//! `[[policy]]`: 200 MiB and a third of a second for 100,000 policies, on
//! one CPU). A file that ends with a long run of `[[policy]]` entries, the
//! shape generated configs have, is cut before every `POLICIES_PER_PIECE`th
//! of them: the head (everything before the first cut) and each piece are
//! whole TOML documents of their own, parsed on another thread a few MiB
//! at a time while this one checks them, in the file's order.
//!
//! A cut is made only where it cannot change what the file means: between
//! top-level `[[policy]]` headers, with no other header after the first of
//! them (a `[dns]` or `[policy.x]` among the policies makes the whole rest
//! one piece), found by TOML's own lexer so that strings, comments and
//! multi-line arrays are never mistaken for headers. A file is accepted or
//! refused as a whole parse would, with the same line in the error; only a
//! file with several mistakes may see another one reported first (a whole
//! parse reports a syntax error anywhere before any check of the entries).
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
};

use serde::de::DeserializeOwned;
use toml_parser::{lexer::TokenKind, Source};

/// Policies per piece: small enough that a piece's document is a few MiB,
/// large enough that threads and channels cost nothing beside parsing.
pub const POLICIES_PER_PIECE: usize = 2_000;

/// Threads that parse pieces while the caller's thread checks them: one
/// halves the time of a whole parse with 100,000 policies (0.7 → 0.45 s
/// here); two more gain 0.07 s but leave 25–30 MiB more resident for good
/// (each thread's malloc arena keeps pages the records kept are
/// scattered over).
const WORKERS: usize = 1;

/// Offsets (ascending) where `text` may be cut into pieces of `per_piece`
/// policies (see the module's documentation); none when the file has no
/// such run, or is not well-formed enough to tell (its parse as a whole
/// then reports what is wrong).
pub fn policy_cuts(text: &str, per_piece: usize) -> Vec<usize> {
    let per_piece = per_piece.max(1);
    // `[[policy]]` headers since the last header of another kind.
    let mut headers: Vec<usize> = Vec::new();
    let mut depth: i64 = 0;
    let mut line_start = true;
    let mut tokens = Source::new(text).lex();
    while let Some(token) = tokens.next() {
        match token.kind() {
            TokenKind::Newline => {
                line_start = true;
                continue;
            }
            TokenKind::Whitespace => continue,
            TokenKind::Eof => break,
            // Outside any value, a bracket first on its line opens a
            // table header, which ends with its line.
            TokenKind::LeftSquareBracket if depth == 0 && line_start => {
                let start = token.span().start();
                let mut shape = String::from("[");
                for t in tokens.by_ref() {
                    match t.kind() {
                        TokenKind::Newline | TokenKind::Eof => break,
                        TokenKind::Whitespace | TokenKind::Comment => {}
                        _ => shape.push_str(&text[t.span().start()..t.span().end()]),
                    }
                }
                if shape == "[[policy]]" {
                    headers.push(start);
                } else {
                    headers.clear();
                }
                line_start = true;
                continue;
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth -= 1;
                if depth < 0 {
                    return Vec::new();
                }
            }
            _ => {}
        }
        line_start = false;
    }
    if depth != 0 {
        return Vec::new();
    }
    // The head keeps the run's first policies: a file whose head made
    // `policy` something else than an array of tables fails there, as a
    // whole parse would.
    headers
        .into_iter()
        .skip(per_piece)
        .step_by(per_piece)
        .collect()
}

/// Parses the pieces of `text` starting at `cuts` on [`WORKERS`] threads
/// while `head` (which parses and checks the text before the first cut)
/// runs on this one; then hands each piece's parse, with its offset in
/// `text`, to `piece`, in order; both work on `state`. The first error
/// ends it (the threads stop after the piece they are parsing).
pub fn parse_pieces<R, E, S>(
    text: &str,
    cuts: &[usize],
    state: &mut S,
    head: impl FnOnce(&mut S) -> Result<(), E>,
    mut piece: impl FnMut(&mut S, usize, Result<R, toml::de::Error>) -> Result<(), E>,
) -> Result<(), E>
where
    R: DeserializeOwned + Send,
{
    let ends = cuts.iter().skip(1).copied().chain([text.len()]);
    let ranges: Vec<(usize, usize)> = cuts.iter().copied().zip(ends).collect();
    let parse = |(from, to): (usize, usize)| toml::from_str::<R>(&text[from..to]);
    let workers = WORKERS.min(ranges.len());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (sender, parsed) = mpsc::channel::<(usize, Result<R, toml::de::Error>)>();
        let mut spawned = true;
        for worker in 0..workers {
            let (sender, ranges, stop) = (sender.clone(), &ranges, &stop);
            let started = std::thread::Builder::new()
                .name("mif-config-piece".into())
                .spawn_scoped(scope, move || {
                    for (i, range) in ranges.iter().enumerate().skip(worker).step_by(workers) {
                        if stop.load(Ordering::Relaxed) || sender.send((i, parse(*range))).is_err()
                        {
                            break;
                        }
                    }
                });
            spawned &= started.is_ok();
        }
        drop(sender);
        if !spawned {
            // No threads to be had: every piece here, in order.
            stop.store(true, Ordering::Relaxed);
            head(state)?;
            return ranges
                .iter()
                .try_for_each(|&range| piece(state, range.0, parse(range)));
        }
        let result = (|| {
            head(state)?;
            let mut early = BTreeMap::new();
            for (next, &(from, _)) in ranges.iter().enumerate() {
                let result = loop {
                    if let Some(result) = early.remove(&next) {
                        break result;
                    }
                    let (i, result) = parsed
                        .recv()
                        .expect("a config piece's parser ended without its piece");
                    early.insert(i, result);
                };
                piece(state, from, result)?;
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(n: usize) -> String {
        (0..n)
            .map(|i| format!("[[policy]]\ncgroup = \"/p{i}\"\nprefer = [\"a\"]\n"))
            .collect()
    }

    #[test]
    fn a_run_of_policies_is_cut_every_n_headers_after_the_first_n() {
        let text = format!("[dns]\nforwarder_port = 5300\n{}", policies(7));
        let cuts = policy_cuts(&text, 2);
        assert_eq!(cuts.len(), 3, "{cuts:?}");
        for cut in &cuts {
            assert!(text[*cut..].starts_with("[[policy]]\ncgroup"), "{cut}");
        }
        assert!(text[..cuts[0]].matches("[[policy]]").count() == 2);
        assert!(policy_cuts(&policies(2), 2).is_empty());
    }

    #[test]
    fn another_header_among_the_policies_keeps_what_is_before_it_whole() {
        let text = format!(
            "{}[dns]\nforwarder_port = 5300\n{}",
            policies(4),
            policies(3)
        );
        let cuts = policy_cuts(&text, 1);
        let dns = text.find("[dns]").unwrap();
        assert!(cuts.iter().all(|c| *c > dns), "{cuts:?}");
        assert_eq!(cuts.len(), 2);
        let sub = format!("{}[policy.x]\na = 1\n", policies(4));
        assert!(policy_cuts(&sub, 1).is_empty());
        let quoted = format!("{}[[\"policy\"]]\n", policies(4));
        assert!(policy_cuts(&quoted, 1).is_empty());
    }

    #[test]
    fn strings_comments_and_multi_line_arrays_are_not_headers() {
        let text = "[[policy]]\ncgroup = \"\"\"\n[[policy]]\n\"\"\"\nprefer = [\n[\"a\"],\n]\n\
                    # [[policy]]\n[[policy]] # a comment\ncgroup = '[[policy]]'\nprefer = [\"a\"]\n\
                    [[ policy ]]\ncgroup = \"/x\"\nprefer = [\"a\"]\n";
        let cuts = policy_cuts(text, 1);
        let real: Vec<usize> = [
            text.find("[[policy]] # a comment").unwrap(),
            text.find("[[ policy ]]").unwrap(),
        ]
        .into();
        assert_eq!(cuts, real);
    }

    #[test]
    fn unbalanced_brackets_cut_nothing() {
        let text = format!("{}prefer = [\n", policies(4));
        assert!(policy_cuts(&text, 1).is_empty());
        let text = format!("{}]\n", policies(4));
        assert!(policy_cuts(&text, 1).is_empty());
    }

    #[test]
    fn pieces_come_in_order_after_the_head() {
        #[derive(serde::Deserialize)]
        struct Raw {
            policy: Vec<toml::Table>,
        }
        let text = policies(50);
        let cuts = policy_cuts(&text, 3);
        let mut seen = vec!["head".to_string()];
        let mut order = Vec::new();
        parse_pieces::<Raw, String, _>(
            &text,
            &cuts,
            &mut order,
            |order| {
                order.push("head".to_string());
                Ok(())
            },
            |order, from, raw| {
                let raw = raw.map_err(|e| e.to_string())?;
                order.push(format!("{from}:{}", raw.policy.len()));
                Ok(())
            },
        )
        .unwrap();
        let ends: Vec<usize> = cuts.iter().skip(1).copied().chain([text.len()]).collect();
        for (from, to) in cuts.iter().zip(ends) {
            let n = text[*from..to].matches("[[policy]]").count();
            seen.push(format!("{from}:{n}"));
        }
        assert_eq!(order, seen);
    }
}
