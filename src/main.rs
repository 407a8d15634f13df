fn main() -> std::process::ExitCode {
    cbuild::cli::main()
}
