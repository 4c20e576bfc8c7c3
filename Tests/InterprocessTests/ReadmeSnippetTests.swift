#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import InterprocessToolSupport
import Synchronization
import Dispatch

/// Issue 16, point 1: every ```swift block of README.md — and of the DocC catalog's articles —
/// compiles as written, as a user pastes it.
///
/// Each block is type-checked (`swiftc -typecheck`, Swift 6 language mode) against the modules that
/// this build already made, with the flags SwiftPM gives a program that depends on `Interprocess`
/// (read from the build description beside the test binary, so debug and release builds alike):
/// - as the `main.swift` of a program, each block on its own — top-level code that awaits is an
///   async context, which is where a blocking overload of an async verb used to be picked;
/// - if it awaits, also inside an `async` function, an actor's method and a `Task { }` (its
///   `import` lines lifted to the top of the file, one file for all blocks).
///
/// `#sourceLocation` maps every diagnostic back to the Markdown file, and a failure names the block
/// (its file, heading and line) and the compiler's message. Warnings fail too, except that a value never used
/// is not worth one inside a wrapper (at the top level it is a global and the compiler says nothing).
///
/// Not Swift, and not checked: blocks marked `sh`, `c`, `python`, or with no language. A Swift block
/// that deliberately does not compile says so on the line above it, with a part of the error it
/// must give: `<!-- readme-check: expect-error "cannot find 'x' in scope" -->`.
///
/// Type-checking one block takes about a second (mostly loading the modules), so the blocks are
/// checked two at a time on threads of their own, never on the cooperative pool.
@Suite("README snippets")
struct ReadmeSnippetTests {
    @Test func everySwiftBlockOfTheReadmeAndTheArticlesCompiles() async throws {
        var blocks: [ReadmeCheck.Block] = []
        for file in ["README.md"] + ReadmeCheck.articles() {
            let text = try String(contentsOfFile: ReadmeCheck.repository + "/" + file, encoding: .utf8)
            blocks += ReadmeCheck.swiftBlocks(in: text, file: file)
        }
        #expect(blocks.filter { $0.file == "README.md" }.count >= 10, "README.md has few swift blocks: is the parser broken?")
        let compiler = try #require(SnippetCompiler.forThisBuild(), SnippetCompiler.notFound)
        let problems = await compiler.check(blocks)
        for problem in problems { Issue.record(Comment(rawValue: problem)) }
    }

    /// The layout article of the DocC catalog repeats the README's layout tables and Python reader;
    /// the README's are checked against the C headers (LayoutTests) and run (IPCToolTests), and the
    /// article's must be the same.
    @Test func theLayoutArticleSaysWhatTheReadmeSays() throws {
        let readme = try String(contentsOfFile: ReadmeCheck.repository + "/README.md", encoding: .utf8)
        let article = try String(contentsOfFile: ReadmeCheck.repository + "/" + ReadmeCheck.catalog + "/SegmentLayout.md", encoding: .utf8)
        let readmeTables = LayoutTests.layoutTables(in: readme)
        let articleTables = LayoutTests.layoutTables(in: article)
        #expect(articleTables.count >= 5, "\(articleTables.keys)")
        for (name, rows) in articleTables {
            let readmeRows = try #require(readmeTables[name], "the article documents \(name), the README does not")
            #expect(rows.map { "\($0.field) @\($0.offset) +\($0.size)" } == readmeRows.map { "\($0.field) @\($0.offset) +\($0.size)" },
                    "the article's table of \(name) differs from the README's")
        }
        let pythonOfTheReadme = ReadmeCheck.blocks(in: readme, language: "python").map { $0.code }
        let pythonOfTheArticle = ReadmeCheck.blocks(in: article, language: "python").map { $0.code }
        #expect(!pythonOfTheArticle.isEmpty && pythonOfTheArticle.allSatisfy { pythonOfTheReadme.contains($0) },
                "the article's Python reader differs from the README's (which IPCToolTests runs)")
    }

    /// The check itself: a block that does not compile is reported with its heading, its line and the
    /// compiler's message, and a marked block must fail with the error it names.
    @Test func aBrokenBlockIsReportedByHeadingAndLine() async throws {
        let markdown = """
            # Doc
            ## Good
            ```swift
            import Interprocess
            let name = SharedObjectName("x")
            ```
            ## Broken
            Text.
            ```swift
            import Interprocess
            let segment = try SharedMemory.create(name: "x", size: 4096)
            try await segment.noSuchVerb()
            ```
            <!-- readme-check: expect-error "cannot find 'undefinedThing' in scope" -->
            ```swift
            print(undefinedThing)
            ```
            ```sh
            this is not swift
            ```
            """
        let blocks = ReadmeCheck.swiftBlocks(in: markdown, file: "DOC.md")
        #expect(blocks.map(\.line) == [4, 10, 16])
        #expect(blocks.map(\.heading) == ["## Good", "## Broken", "## Broken"])
        #expect(blocks.map(\.expectedError) == [nil, nil, "cannot find 'undefinedThing' in scope"])
        #expect(blocks[1].awaits && !blocks[0].awaits)

        let compiler = try #require(SnippetCompiler.forThisBuild(), SnippetCompiler.notFound)
        let problems = await compiler.check(blocks)
        #expect(problems.count == 1, "\(problems)")
        let report = problems.first ?? ""
        #expect(report.contains("DOC.md:10 (## Broken)"), "\(report)")
        #expect(report.contains("DOC.md:12:"), "\(report)")
        #expect(report.contains("noSuchVerb"), "\(report)")
        #expect(report.contains("main.swift"), "\(report)")

        // A marked block that compiles after all is reported too.
        let fixed = ReadmeCheck.swiftBlocks(in: markdown.replacingOccurrences(of: "print(undefinedThing)", with: "print(1)"), file: "DOC.md")
        let stale = await compiler.check([fixed[2]])
        #expect(stale.count == 1 && stale[0].contains("expect-error"), "\(stale)")
    }
}

/// Finding the ```swift blocks of a Markdown file.
enum ReadmeCheck {
    /// The repository (this file is Tests/InterprocessTests/ReadmeSnippetTests.swift).
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The DocC catalog, whose articles' Swift blocks are checked as the README's are.
    static let catalog = "Sources/Interprocess/Interprocess.docc"

    /// The articles of the catalog, relative to the repository.
    static func articles() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: repository + "/" + catalog)) ?? []
        return names.filter { $0.hasSuffix(".md") }.sorted().map { catalog + "/" + $0 }
    }

    struct Block: Sendable {
        /// The Markdown file, relative to the repository.
        var file: String
        /// The last heading above the block, with its `#`s.
        var heading: String
        /// The 1-based line of the block's first line of code (the line after its fence).
        var line: Int
        var code: [String]
        /// From `<!-- readme-check: expect-error "…" -->` on the line above the fence.
        var expectedError: String?

        /// Whether the block awaits (then it is also compiled in an async function, an actor and a task).
        var awaits: Bool {
            code.contains { line in
                let code = line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                return code.range(of: #"\bawait\b"#, options: .regularExpression) != nil
            }
        }
    }

    /// Every fenced block whose info string is `swift`, with the heading it is under.
    static func swiftBlocks(in markdown: String, file: String) -> [Block] {
        blocks(in: markdown, language: "swift", file: file)
    }

    /// Every fenced block whose info string starts with `language`.
    static func blocks(in markdown: String, language wanted: String, file: String = "") -> [Block] {
        let lines = markdown.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var blocks: [Block] = []
        var heading = "(top of file)"
        var index = 0
        while index < lines.count {
            let line = lines[index]
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("```") {
                let info = trimmed.dropFirst(3).trimmingCharacters(in: .whitespaces)
                let language = info.split(separator: " ").first.map(String.init) ?? ""
                let start = index + 1
                var end = start
                while end < lines.count, lines[end].trimmingCharacters(in: .whitespaces) != "```" { end += 1 }
                if language == wanted {
                    let above = index > 0 ? lines[index - 1] : ""
                    blocks.append(Block(file: file, heading: heading, line: start + 1, code: Array(lines[start..<min(end, lines.count)]),
                                        expectedError: expectedError(in: above)))
                }
                index = end + 1
                continue
            }
            if line.hasPrefix("#") { heading = line }
            index += 1
        }
        return blocks
    }

    /// The quoted text of `<!-- readme-check: expect-error "TEXT" -->`, or nil.
    static func expectedError(in line: String) -> String? {
        let marker = "<!-- readme-check: expect-error \""
        guard let start = line.range(of: marker), let end = line.range(of: "\" -->", range: start.upperBound..<line.endIndex)
        else { return nil }
        return String(line[start.upperBound..<end.lowerBound])
    }
}

/// Type-checks snippets against this build's modules with this build's compiler.
struct SnippetCompiler: Sendable {
    let swiftc: String
    let flags: [String]

    static let notFound = Comment(rawValue:
        "no build description with the flags of InterprocessAsyncContexts near \(BuiltExecutable.directory) (description.json)")

    /// The compiler and the search paths SwiftPM used for `InterprocessAsyncContexts`, an executable
    /// that depends on `Interprocess` alone — what a user's program gets. From `description.json`,
    /// which SwiftPM writes beside the products of every build configuration.
    static func forThisBuild() -> SnippetCompiler? {
        var directory = BuiltExecutable.directory
        for _ in 0..<3 {
            if let compiler = fromDescription(directory + "/description.json") { return compiler }
            guard let slash = directory.lastIndex(of: "/"), slash != directory.startIndex else { break }
            directory = String(directory[..<slash])
        }
        return nil
    }

    private static func fromDescription(_ path: String) -> SnippetCompiler? {
        guard let data = FileManager.default.contents(atPath: path),
              let description = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let scans = description["swiftTargetScanArgs"] as? [String: Any],
              let arguments = scans["InterprocessAsyncContexts"] as? [String],
              let swiftc = arguments.first
        else { return nil }
        // Where modules and headers are, and for which target: not the target's own settings
        // (package name, upcoming features, defines), which a user's program does not have.
        let withValue: Set = ["-I", "-F", "-Xcc", "-target", "-sdk", "-module-cache-path", "-resource-dir"]
        var flags: [String] = []
        var index = 1
        while index < arguments.count {
            if withValue.contains(arguments[index]), index + 1 < arguments.count {
                flags += [arguments[index], arguments[index + 1]]
                index += 2
            } else {
                index += 1
            }
        }
        return SnippetCompiler(swiftc: swiftc, flags: flags)
    }

    /// One way of compiling a block.
    enum Context: String, CaseIterable, Sendable {
        case main = "main.swift"
        case asyncFunction = "an async function"
        case actor = "an actor's method"
        case task = "a Task"
    }

    /// Compiles every block in every context it needs; one readable report per failing block and context.
    func check(_ blocks: [ReadmeCheck.Block]) async -> [String] {
        let directory = NSTemporaryDirectory() + "readme-check-\(getpid())-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        // One job per block as main.swift, and one file with every awaiting block in each wrapper.
        var jobs: [(source: String, path: String, parseAsLibrary: Bool)] = []
        for (number, block) in blocks.enumerated() {
            let source = "#sourceLocation(file: \"\(block.file)\", line: \(block.line))\n" + block.code.joined(separator: "\n") + "\n"
            jobs.append((source, "\(directory)/block\(number)/main.swift", false))
        }
        let awaiting = blocks.enumerated().filter { $0.element.awaits && $0.element.expectedError == nil }
        if !awaiting.isEmpty {
            jobs.append((wrapped(awaiting.map(\.element)), "\(directory)/wrapped/Wrapped.swift", true))
        }
        for job in jobs {
            let folder = String(job.path[..<job.path.lastIndex(of: "/")!])
            try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try? job.source.write(toFile: job.path, atomically: true, encoding: .utf8)
        }
        let outputs = await compileAll(jobs.map { ($0.path, $0.parseAsLibrary) })

        var problems: [String] = []
        // What main.swift said of each block: not repeated for the wrappers.
        var saidInMain: [Int: Set<String>] = [:]
        for (number, block) in blocks.enumerated() {
            let output = outputs[number]
            let diagnostics = Diagnostic.parse(output.text).filter { $0.isError || $0.isWarning }
            saidInMain[number] = Set(diagnostics.map { "\($0.line):\($0.column): \($0.message)" })
            let name = "\(block.file):\(block.line) (\(block.heading))"
            if let expected = block.expectedError {
                if !diagnostics.contains(where: { $0.isError && $0.message.contains(expected) }) {
                    problems.append("""
                        \(name): marked `readme-check: expect-error "\(expected)"` but compiles without that error; \
                        remove the marker or restore the error. Compiler said:
                        \(output.text.isEmpty ? "(nothing)" : output.text)
                        """)
                }
                continue
            }
            if !diagnostics.isEmpty || !output.succeeded {
                problems.append(report(name, context: .main, diagnostics: diagnostics, raw: output.text, block: block))
            }
        }
        if !awaiting.isEmpty, let output = outputs.last {
            let diagnostics = Diagnostic.parse(output.text).filter { $0.isError || ($0.isWarning && !$0.isAboutAnUnusedValue) }
            for (number, block) in awaiting {
                let range = block.line..<(block.line + block.code.count)
                for context in Context.allCases where context != .main {
                    let mine = diagnostics.filter {
                        $0.file == "\(block.file) [\(context.rawValue)]" && range.contains($0.line)
                            && !(saidInMain[number] ?? []).contains("\($0.line):\($0.column): \($0.message)")
                    }
                    if !mine.isEmpty {
                        problems.append(report("\(block.file):\(block.line) (\(block.heading))", context: context, diagnostics: mine, raw: "", block: block))
                    }
                }
            }
            if !output.succeeded && !diagnostics.contains(where: \.isError) {
                problems.append("the blocks wrapped in functions, actors and tasks did not compile:\n\(output.text)")
            }
        }
        return problems
    }

    /// Every awaiting block inside an async function, an actor's method and a task, with its
    /// `import` lines at the top of the file (an import cannot stand in a function).
    private func wrapped(_ blocks: [ReadmeCheck.Block]) -> String {
        var imports: Set<String> = []
        var bodies = ""
        for (number, block) in blocks.enumerated() {
            let code = block.code.map { line -> String in
                if line.hasPrefix("import ") { imports.insert(line); return "" }
                return line
            }.joined(separator: "\n")
            func located(_ context: Context) -> String {
                "#sourceLocation(file: \"\(block.file) [\(context.rawValue)]\", line: \(block.line))\n\(code)\n#sourceLocation()\n"
            }
            bodies += """
                func readmeBlock\(number)InAnAsyncFunction() async throws {
                \(located(.asyncFunction))}
                actor ReadmeBlock\(number)Actor {
                    var state = 0
                    func run() async throws {
                \(located(.actor))}
                }
                func readmeBlock\(number)InATask() {
                    Task {
                \(located(.task))}
                }

                """
        }
        return imports.sorted().joined(separator: "\n") + "\n" + bodies
    }

    private func report(_ name: String, context: Context, diagnostics: [Diagnostic], raw: String, block: ReadmeCheck.Block) -> String {
        var text = "\(name) does not compile as written, in \(context.rawValue):"
        if diagnostics.isEmpty { return text + "\n" + raw }
        for diagnostic in diagnostics {
            text += "\n  \(diagnostic.file):\(diagnostic.line):\(diagnostic.column): \(diagnostic.severity): \(diagnostic.message)"
            let offset = diagnostic.line - block.line
            if block.code.indices.contains(offset) { text += "\n      \(block.code[offset].trimmingCharacters(in: .whitespaces))" }
        }
        return text
    }

    /// Runs the compiler over every file, two at a time, on threads of their own.
    private func compileAll(_ files: [(path: String, parseAsLibrary: Bool)]) async -> [(succeeded: Bool, text: String)] {
        let swiftc = swiftc, flags = flags
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                let results = Mutex<[Int: (Bool, String)]>([:])
                let next = Atomic<Int>(0)
                DispatchQueue.concurrentPerform(iterations: 2) { _ in
                    while true {
                        let index = next.add(1, ordering: .relaxed).oldValue
                        guard index < files.count else { return }
                        let file = files[index]
                        var arguments = ["-typecheck", "-swift-version", "6", "-diagnostic-style", "llvm"] + flags
                        if file.parseAsLibrary { arguments.append("-parse-as-library") }
                        arguments.append(file.path)
                        let result: (Bool, String)
                        do {
                            let run = try ChildProcess.run(swiftc, arguments, timeout: .seconds(300))
                            result = (run.termination == .exited(0), run.standardError + run.standardOutput
                                + (run.termination == .exited(0) ? "" : "\n(\(swiftc) \(run.termination.map { "\($0)" } ?? "timed out"))"))
                        } catch {
                            result = (false, "cannot start \(swiftc): \(error)")
                        }
                        results.withLock { $0[index] = result }
                    }
                }
                let all = results.withLock { results in files.indices.map { results[$0] ?? (false, "not compiled") } }
                continuation.resume(returning: all)
            }
        }
    }
}

/// One line of the compiler's output in the LLVM style: `FILE:LINE:COLUMN: SEVERITY: MESSAGE`.
struct Diagnostic: Sendable {
    var file: String
    var line: Int
    var column: Int
    var severity: String
    var message: String

    var isError: Bool { severity == "error" }
    var isWarning: Bool { severity == "warning" }
    /// "initialization of immutable value 'x' was never used", "variable 'x' was never mutated", …
    var isAboutAnUnusedValue: Bool {
        message.contains("was never used") || message.contains("was never mutated") || message.contains("is unused")
    }

    static func parse(_ output: String) -> [Diagnostic] {
        output.split(separator: "\n").compactMap { line in
            for severity in ["error", "warning", "note"] {
                guard let marker = line.range(of: ": \(severity): ") else { continue }
                let location = line[..<marker.lowerBound].split(separator: ":", omittingEmptySubsequences: false)
                guard location.count >= 3, let lineNumber = Int(location[location.count - 2]),
                      let column = Int(location[location.count - 1]) else { continue }
                return Diagnostic(file: location.dropLast(2).joined(separator: ":"), line: lineNumber, column: column,
                                  severity: severity, message: String(line[marker.upperBound...]))
            }
            return nil
        }
    }
}
