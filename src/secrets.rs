//! Secret values (`secret: true` variables, `--secret-file`): masked wherever kfix
//! reports or records text.

/// Replace every secret value in `s` with `********`.
pub fn mask(s: &mut String, secrets: &[(String, String)]) {
    for (_, v) in secrets {
        if !v.is_empty() && s.contains(v.as_str()) {
            *s = s.replace(v.as_str(), "********");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_occurrence_of_a_secret_is_masked_and_an_empty_one_is_not() {
        let mut s = "pw=hunter2 again hunter2".to_string();
        super::mask(
            &mut s,
            &[("pw".into(), "hunter2".into()), ("e".into(), String::new())],
        );
        assert_eq!(s, "pw=******** again ********");
    }
}
