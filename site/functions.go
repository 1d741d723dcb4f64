package site

import (
	"github.com/hashicorp/go-cty-funcs/cidr"
	"github.com/hashicorp/go-cty-funcs/collection"
	"github.com/hashicorp/go-cty-funcs/crypto"
	"github.com/hashicorp/go-cty-funcs/encoding"
	"github.com/hashicorp/go-cty-funcs/filesystem"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// functions is the function table of the site language: go-cty's standard
// library and hashicorp's go-cty-funcs, under the names Terraform users know.
// file() and friends resolve paths relative to the site file's directory.
func functions(baseDir string) map[string]function.Function {
	return map[string]function.Function{
		// strings
		"format":     stdlib.FormatFunc,
		"formatlist": stdlib.FormatListFunc,
		"join":       stdlib.JoinFunc,
		"split":      stdlib.SplitFunc,
		"lower":      stdlib.LowerFunc,
		"upper":      stdlib.UpperFunc,
		"title":      stdlib.TitleFunc,
		"trimspace":  stdlib.TrimSpaceFunc,
		"trim":       stdlib.TrimFunc,
		"trimprefix": stdlib.TrimPrefixFunc,
		"trimsuffix": stdlib.TrimSuffixFunc,
		"replace":    stdlib.ReplaceFunc,
		"regex":      stdlib.RegexFunc,
		"substr":     stdlib.SubstrFunc,
		"indent":     stdlib.IndentFunc,
		"chomp":      stdlib.ChompFunc,
		"strrev":     stdlib.ReverseFunc,
		// numbers
		"abs":      stdlib.AbsoluteFunc,
		"ceil":     stdlib.CeilFunc,
		"floor":    stdlib.FloorFunc,
		"max":      stdlib.MaxFunc,
		"min":      stdlib.MinFunc,
		"parseint": stdlib.ParseIntFunc,
		// collections
		"range":      stdlib.RangeFunc,
		"length":     stdlib.LengthFunc,
		"concat":     stdlib.ConcatFunc,
		"contains":   stdlib.ContainsFunc,
		"distinct":   stdlib.DistinctFunc,
		"element":    stdlib.ElementFunc,
		"flatten":    stdlib.FlattenFunc,
		"keys":       stdlib.KeysFunc,
		"values":     stdlib.ValuesFunc,
		"lookup":     stdlib.LookupFunc,
		"merge":      stdlib.MergeFunc,
		"setproduct": stdlib.SetProductFunc,
		"slice":      stdlib.SliceFunc,
		"sort":       stdlib.SortFunc,
		"zipmap":     stdlib.ZipmapFunc,
		"chunklist":  stdlib.ChunklistFunc,
		"coalesce":   collection.CoalesceFunc,
		"tolist":     stdlib.MakeToFunc(listOfDynamic),
		"toset":      stdlib.MakeToFunc(setOfDynamic),
		"tostring":   stdlib.MakeToFunc(stringType),
		"tonumber":   stdlib.MakeToFunc(numberType),
		"jsonencode": stdlib.JSONEncodeFunc,
		"jsondecode": stdlib.JSONDecodeFunc,
		// networks
		"cidrhost":    cidr.HostFunc,
		"cidrnetmask": cidr.NetmaskFunc,
		"cidrsubnet":  cidr.SubnetFunc,
		"cidrsubnets": cidr.SubnetsFunc,
		// encoding and hashing
		"base64encode": encoding.Base64EncodeFunc,
		"base64decode": encoding.Base64DecodeFunc,
		"urlencode":    encoding.URLEncodeFunc,
		"sha256":       crypto.Sha256Func,
		"sha512":       crypto.Sha512Func,
		// files, relative to the site file
		"file":       filesystem.MakeFileFunc(baseDir, false),
		"filebase64": filesystem.MakeFileFunc(baseDir, true),
		"fileexists": filesystem.MakeFileExistsFunc(baseDir),
		"basename":   filesystem.BasenameFunc,
		"dirname":    filesystem.DirnameFunc,
	}
}
