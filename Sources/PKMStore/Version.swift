/// The library's version, reported by `pkm_version` and written into the stores it creates.
let pkmstoreVersion = "0.1.0"
